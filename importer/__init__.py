"""Intranet side of `bundle`: the trust gate, image loading and the swap. Never imports `bundler`."""
