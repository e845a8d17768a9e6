"""Shared core of `bundle`: the bundle format, errors, GnuPG helpers and the CLI entry point.

Both sides import this package; the intranet side (`importer`) never imports `bundler`.
"""

__version__ = "0.1.0"
