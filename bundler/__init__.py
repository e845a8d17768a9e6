"""Internet side of `bundle`: build bundles, watch upstream releases, add approvals."""
