"""What the plan says and what may block a swap (importer.kinds.container.plan), without an engine."""

import pytest

from bundlecore.release import ContainerTarget, RunSettings

from importer.kinds.container.plan import Blocker, PlanKind, SwapPlan, note_risks, install_touches_existing_data


def inspect(auto_remove=False, labels=None):
    return {"Config": {"Labels": labels or {}}, "HostConfig": {"AutoRemove": auto_remove}}


@pytest.mark.parametrize("info,blockers,warned", [
    (inspect(), [], 0),
    (inspect(auto_remove=True), [Blocker.AUTO_REMOVE], 1),
    (inspect(labels={"com.docker.swarm.service.id": "x"}), [Blocker.SWARM_TASK], 1),
    (inspect(labels={"com.docker.compose.project": "p"}), [], 1),  # a warning only: the swap goes on
])
def test_a_container_the_swap_must_not_touch_is_a_typed_blocker_and_is_also_shown(info, blockers, warned):
    plan = SwapPlan(PlanKind.UPGRADE, "app", ContainerTarget("app", "app:2", RunSettings()), "sha256:x", "app:2")
    note_risks(plan, info)
    assert plan.blockers == blockers and len(plan.warnings) == warned
    assert all(b.warning in plan.warnings for b in blockers)


@pytest.mark.parametrize("volumes,touches", [
    ([], False), (["/cache"], False), (["/cache:ro"], False), (["data:/data"], True), (["/srv:/srv"], True),
])
def test_a_first_install_backs_up_only_when_it_mounts_something_that_existed_before(volumes, touches):
    assert install_touches_existing_data(ContainerTarget("app", "app:1", RunSettings.from_json({"volumes": volumes}))) is touches


def test_the_install_plan_lists_ports_mounts_and_the_backup_of_existing_data():
    run = RunSettings.from_json({"ports": ["80:8080"], "volumes": ["data:/data"]})
    plan = SwapPlan(PlanKind.INSTALL, "app", ContainerTarget("app", "app:1", run),
                    "sha256:" + "a" * 64, "app:1", health="still running after 10 s")
    assert plan.lines() == [
        f"install app: new container from app:1 (sha256:{'a' * 12})",
        "  publish port 80:8080 (from the bundle)", "  mount data:/data (from the bundle)",
        "  data already in those volumes/directories is backed up before the first start",
        "  health check: still running after 10 s"]
