"""The `container` target kind: one Docker container replaced in place, without losing a byte of
its data, and the old version put back by itself when the new one does not come up healthy
(the protocol: importer.kinds).

  plan        what a swap will do (changes nothing) and the preflight checks
  run         run a plan, roll back to the previous generation, recover after a crash
  machine     the swap's steps (one table, run by importer.steps)
  journal     the durable record of a swap in progress (steps, typed records)
  uninstall   `bundle uninstall`: its steps (final backup, remove, state moved to removed/)
  generations the kept versions of an application
  config      the new container's settings (faithful copy, or first install)
  merge       three-way merge of the run settings on upgrade
  engine      the container operations over the Docker SDK
  status      what `bundle status` reports
The backup and exact restore of the mounts is importer.backup (shared with the service kind), the
health gate importer.health and a first install's create body importer.runconfig (shared with the
compose kind).
"""

from importer.kinds.container.plan import plan_rollback
from importer.kinds.container.plan import plan_swap as plan
from importer.kinds.container.run import recover, rollback
from importer.kinds.container.run import run_swap as apply
from importer.kinds.container.status import app_status as status
from importer.kinds.container.status import status_lines
from importer.kinds.container.uninstall import plan_uninstall, uninstall

# the import options its plan takes (importer.pipeline.plan_options)
PLAN_OPTIONS = ("prefer", "masked", "app", "sequence", "signed", "systemd_unit")


def unfinished_runs(state) -> list[str]:
    """A swap is one journal: nothing of a container's runs above it (importer.kinds)."""
    return []

__all__ = ["PLAN_OPTIONS", "plan", "apply", "plan_rollback", "rollback", "recover", "status", "status_lines",
           "plan_uninstall", "uninstall", "unfinished_runs"]
