"""The `bundle` command line: the verb registry (`registry.py`) and the click group with its
conventions (`main.py`, the `bundle` entry point). The top of the layering: it imports bundler/,
importer/ and bundlecore/, and none of them imports it."""
