"""Options shared by the intranet-side commands."""

import click

keys_option = click.option("--keys", "keys_dir", type=click.Path(), default=None,
                           help="Trust store directory (default $BUNDLE_KEYS, /etc/bundle/keys, or the packaged keys/).")
state_dir_option = click.option("--state-dir", type=click.Path(), default=None,
                                help="Importer state directory (default $BUNDLE_STATE_DIR or /var/lib/bundle).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result.")
