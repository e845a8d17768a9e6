"""`bundle import`: the gate, then loading, then the swap."""

from pathlib import Path

import click

from bundlecore import jsondoc
from bundlecore.errors import UsageProblem
from bundlecore.text import emit
from bundlecore.trust import TrustStore
from importer import metrics
from importer.options import (app_status_now, bundle_argument, human_out, json_option, keys_option,
                              metrics_file_option, require_confirmation, state_dir_option)
from importer.pipeline import import_bundle, probation_seconds
from importer.state import StateDir


def _probation(text):
    """--probation read before anything else, so a bad value is a usage error that touched nothing."""
    try:
        return probation_seconds(text)
    except UsageProblem as e:
        raise click.BadParameter(str(e).removeprefix("--probation: ")) from None


@click.command("import")
@bundle_argument
@keys_option
@state_dir_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (unattended runs).")
@click.option("--dry-run", is_flag=True, help="Verify and print the plan, change nothing.")
@click.option("--allow-downgrade", is_flag=True, help="Accept a sequence not above the installed one (recorded).")
@click.option("--adopt", is_flag=True, help="Let the bundle take over a container or move tags it did not install, "
              "or a volume, network or service no app owns (shown in the plan).")
@click.option("--site", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Site settings merged over the bundle's run settings (default /etc/bundle/apps/NAME.toml).")
@click.option("--prefer", type=click.Choice(["bundle", "local"]), default=None,
              help="Which side wins a run setting changed both on this host and by the release.")
@click.option("--keep", type=click.IntRange(1, 20), default=2, show_default=True, help="Generations to keep for rollback.")
@click.option("--probation", metavar="DURATION", default=None, callback=lambda ctx, param, v: _probation(v),
              help="Watch the new version this long (e.g. 10m) before committing, the old one kept parked; "
              "this import only, overrides the bundle's [target.health] probation (a service release: "
              "each stage soaks at least this long; a compose project: every service, over one window).")
@click.option("--registry", metavar="HOST:PORT", help="Push the verified images to this registry (overrides the "
              "target's registry; either must be granted in host-policy.toml `registries`); a service target "
              "is rolled out from it by digest.")
@click.option("--systemd-unit", is_flag=True, help="Podman: write a systemd unit that starts the container at "
              "boot (Podman has no daemon to); later swaps keep it current (shown in the plan).")
@click.option("--resume", is_flag=True, help="Continue a staged release stopped between stages.")
@json_option
@metrics_file_option
def import_cmd(bundle, keys_dir, state_dir, yes, dry_run, allow_downgrade, adopt, site, prefer, keep, registry, resume,
               probation, systemd_unit, as_json, metrics_file):
    """Verify a bundle, load its images and swap the running application."""
    out = human_out(as_json)
    state = StateDir(state_dir)  # checked (owner, mode) before anything else is read
    with metrics.written_after(state_dir, metrics_file):
        result = import_bundle(
            bundle, TrustStore.load(keys_dir), state, dry_run=dry_run,
            allow_downgrade=allow_downgrade, adopt=adopt, keep=keep, site=site, prefer=prefer, registry=registry,
            resume=resume, probation=probation, systemd_unit=systemd_unit, out=out,
            confirm=lambda: require_confirmation(yes, "Go ahead?", "import"))
    code = result.pop("exit_code", 0)  # 11: a staged release paused after a stage (bundle promote continues it)
    if as_json:
        emit(jsondoc.document("import", {**result, "app": app_status_now(state, result["name"])}, code), True)
    return code
