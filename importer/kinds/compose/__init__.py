"""The `compose` target kind: a Compose project swapped, gated and rolled back as one unit (the
protocol: importer.kinds; docs/format.md `compose`).

  project   names and labels as Compose has them, the config hash, each service's create body, the plan
  machine   the swap's per-service steps (one table, run by importer.steps), its journal and undo
  run       plan, apply, rollback, recover
  uninstall `bundle uninstall` of the project (journaled, the container kind's rules)
  status    what `bundle status`, `list` and `--json` show of the project and each service
  show      `bundle show`: the effective compose file as applied (importer.cmd_show picks it)
The backup and exact restore of the mounts is importer.backup, the health gate importer.health and
the run settings' create body importer.runconfig (shared with the container kind).
"""

from importer.kinds.compose.run import apply, plan_rollback, recover, rollback
from importer.kinds.compose.run import plan_project as plan
from importer.kinds.compose.status import app_status as status
from importer.kinds.compose.status import status_lines
from importer.kinds.compose.uninstall import plan_uninstall, uninstall

# the import options its plan takes (importer.pipeline.plan_options)
PLAN_OPTIONS = ("app", "images", "adopt", "prefer", "masked", "signed")


def unfinished_runs(state) -> list[str]:
    """A project swap is one journal: nothing runs above it (importer.kinds)."""
    return []


__all__ = ["PLAN_OPTIONS", "plan", "apply", "plan_rollback", "rollback", "recover", "status", "status_lines",
           "plan_uninstall", "uninstall", "unfinished_runs"]
