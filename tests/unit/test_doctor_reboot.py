"""`bundle doctor`'s reboot row on Podman, without an engine: which installed containers nothing
brings back after a reboot (no daemon there: a systemd unit, or podman-restart.service for `always`)."""

import pytest

from importer.doctor import reboot_finding


@pytest.mark.parametrize("policies, units, restart_service, verdict, names", [
    ({}, set(), False, "ok", []),
    ({"web": "no", "db": ""}, set(), False, "ok", []),
    ({"web": "unless-stopped"}, set(), True, "warn", ["web"]),            # podman-restart starts `always` only
    ({"web": "unless-stopped"}, {"container-web.service"}, False, "ok", []),
    ({"web": "on-failure"}, {"web.container"}, False, "ok", []),         # Quadlet
    ({"web": "always"}, set(), True, "ok", []),
    ({"web": "always", "db": "on-failure"}, {"other.service"}, False, "warn", ["db", "web"]),
])
def test_on_podman_doctor_warns_of_containers_nothing_brings_back_after_a_reboot(policies, units, restart_service,
                                                                                verdict, names):
    f = reboot_finding(policies, units, restart_service)
    assert f.check == "reboot" and f.verdict == verdict
    if names:
        assert f"have no systemd unit: {', '.join(names)} (" in f.detail
