"""The `container` target kind: one Docker container replaced in place (see importer.swap.kinds)."""

from importer.swap.plan import plan_rollback
from importer.swap.plan import plan_swap as plan
from importer.swap.run import recover, rollback
from importer.swap.run import run_swap as apply
from importer.swap.status import app_status as status
from importer.swap.status import status_lines

# the import options its plan takes (importer.pipeline.plan_options)
PLAN_OPTIONS = ("prefer", "masked")

__all__ = ["PLAN_OPTIONS", "plan", "apply", "plan_rollback", "rollback", "recover", "status", "status_lines"]
