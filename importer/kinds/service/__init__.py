"""The `service` target kind: Docker Swarm services updated by digest from the intranet registry,
health-gated by Swarm, stage by stage (see importer.kinds for the protocol).

settings.py  what the signed target asks Swarm for (pure)
rollout.py   one service created or updated, journaled, waited on; recover
release.py   the stages of a release, soak, analysis, pause and --resume; Swarm's rollback
control.py   `bundle promote` and `bundle abort` of a paused release; recover
status.py    `bundle status` of a service
"""

from importer.kinds.service.release import plan
from importer.kinds.service.control import recover
from importer.kinds.service.release import apply, unfinished_runs
from importer.kinds.service.status import plan_rollback, plan_uninstall, rollback, status, status_lines, uninstall

# the import options plan() takes (importer.pipeline.plan_options)
PLAN_OPTIONS = ("registry", "resume")

__all__ = ["PLAN_OPTIONS", "plan", "apply", "plan_rollback", "rollback", "recover", "status", "status_lines",
           "plan_uninstall", "uninstall", "unfinished_runs"]
