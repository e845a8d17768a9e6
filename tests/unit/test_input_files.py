"""Input files (inventory, site file, host policy, trust policy) are capped while they are read,
and a TOML file nested too deeply is one error, not the parser's RecursionError (issue 18)."""

from __future__ import annotations

import pytest

from bundlecore.errors import EnvironmentProblem
from bundlecore.fsutil import MAX_CONFIG, TooLarge, read_capped, read_toml
from bundlecore.trust import load_policy
from importer.hostpolicy import POLICY_FILE, HostPolicy


def test_an_endless_file_is_refused_after_reading_its_cap():
    with pytest.raises(TooLarge, match="over its cap of 4096 bytes"):
        read_capped("/dev/zero", 4096)  # read whole first, this would never end


def test_a_file_at_its_cap_is_read(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x" * 100)
    assert read_capped(f, 100) == b"x" * 100
    with pytest.raises(TooLarge):
        read_capped(f, 99)


@pytest.mark.parametrize("text, why", [
    ("a = " + "[" * 100_000 + "]" * 100_000, "nested too deeply to be read"),
    ("a = " + "{ b = " * 5000 + "1" + " }" * 5000, "nested too deeply to be read"),
    ('a = "' + "x" * MAX_CONFIG + '"', f"over its cap of {MAX_CONFIG} bytes"),
    ("a = [", "not valid TOML: "),
])
def test_a_hostile_config_file_is_one_error(tmp_path, text, why):
    f = tmp_path / "f.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=why):
        read_toml(f)


@pytest.mark.parametrize("text, why", [
    ("[host]\na = " + "[" * 100_000 + "]" * 100_000, "is nested too deeply to be read"),
    ("[host]\n# " + "x" * MAX_CONFIG, "is over its cap of"),
])
def test_a_hostile_host_policy_or_trust_policy_is_one_line(tmp_path, text, why):
    (tmp_path / POLICY_FILE).write_text(text)
    with pytest.raises(EnvironmentProblem, match=why):
        HostPolicy.load(tmp_path)
    (tmp_path / "policy.toml").write_text(text.replace("[host]", "[roles]"))
    with pytest.raises(EnvironmentProblem, match=why):
        load_policy(tmp_path / "policy.toml", set())
