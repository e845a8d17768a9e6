"""The bench's own arithmetic and table (scripts/bench.py): medians, ratios of medians, the
import's phases from its lines, CPU figures from GNU time and /proc, the preset sizes, the JSON."""

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench", Path(__file__).resolve().parents[2] / "scripts" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("xs, want", [
    ([3.0], 3.0),
    ([3.0, 1.0, 2.0], 2.0),
    ([4.0, 1.0, 3.0, 2.0], 2.5),
    ([10.0, 10.0, 99.0], 10.0),   # one slow run on a shared machine does not move the median
])
def test_median_of_runs(xs, want):
    assert bench.median(xs) == want


def test_median_of_no_runs_is_an_error_not_zero():
    with pytest.raises(ValueError):
        bench.median([])


@pytest.mark.parametrize("subject, baseline, want", [
    ([11.0, 12.0, 13.0], [10.0, 10.0, 10.0], 1.2),
    ([5.0], [10.0], 0.5),
    ([1.0, 100.0, 2.0], [1.0, 1.0, 50.0], 2.0),   # medians first, then the ratio
    ([], [1.0], None),
    ([1.0], [], None),
    ([1.0], [0.0], None),
])
def test_ratio_is_of_the_medians_of_the_same_run(subject, baseline, want):
    got = bench.ratio_of_medians(subject, baseline)
    assert got == (None if want is None else pytest.approx(want))


_IMPORT_LINES = [
    (0.31, "verified signature of ABCD on bench 1.0.0 (sequence 1)"),
    (0.32, "install bench-app: new container from bench/big:1 (sha256:cc05)"),
    (2.80, "verified 20 payload files (316715582 bytes) and loaded bench/big:1 (image IDs checked)"),
    (2.81, "swapping bench-app (journal /tmp/x/journal.json)"),
    (2.90, "  backed up 0 mount(s) of bench-app (0 B compressed)"),
    (3.00, "  starting bench-app 1.0.0; health check: command in the container succeeds"),
]


def test_import_phases_come_from_its_own_lines():
    got = bench.import_phases(_IMPORT_LINES, 4.40)
    assert got == pytest.approx({"startup_gate": 0.31, "stage_load": 2.49, "swap_prepare": 0.20, "start_probe": 1.40})
    assert sum(got.values()) == pytest.approx(4.40)


@pytest.mark.parametrize("drop", [0, 2, 5])
def test_import_phases_are_left_out_when_a_line_is_missing(drop):
    assert bench.import_phases(_IMPORT_LINES[:drop] + _IMPORT_LINES[drop + 1:], 4.4) == {}


@pytest.mark.parametrize("text, want", [
    ("\tUser time (seconds): 1.25\n\tSystem time (seconds): 0.50\n\tMaximum resident set size (kbytes): 110420\n",
     {"cpu_s": 1.75, "maxrss_kb": 110420}),
    ("User time (seconds): 0.00\nSystem time (seconds): 0.00\nMaximum resident set size (kbytes): 0\n",
     {"cpu_s": 0.0, "maxrss_kb": 0}),
    ("Command exited with non-zero status 1\n", {"cpu_s": None, "maxrss_kb": None}),
    ("", {"cpu_s": None, "maxrss_kb": None}),
])
def test_cpu_and_peak_rss_from_the_time_report(text, want):
    assert bench.parse_time_report(text) == want


@pytest.mark.parametrize("stat, want", [
    ("1234 (dockerd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 30 0 100 0 0", 3.0),
    ("1234 (odd name) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 100 0 7 7 20 0 30 0 100 0 0", 1.0),
])
def test_engine_cpu_seconds_from_proc_stat(stat, want):
    assert bench.proc_cpu_seconds(stat, 100) == pytest.approx(want)


@pytest.mark.parametrize("quick, given, want", [
    (False, (None, None, None), {"size_mb": 1000, "patch_layer_mb": 300, "repeat": 3}),
    (True, (None, None, None), {"size_mb": 100, "patch_layer_mb": 30, "repeat": 1}),
    (True, (600, None, 2), {"size_mb": 600, "patch_layer_mb": 30, "repeat": 2}),
    (False, (None, 50, None), {"size_mb": 1000, "patch_layer_mb": 50, "repeat": 3}),
])
def test_sizes_are_the_preset_with_what_was_given_over_it(quick, given, want):
    assert bench.resolve_sizes(quick, *given) == want


@pytest.mark.parametrize("given", [(0, None, None), (None, -1, None), (None, None, 0)])
def test_a_size_or_repeat_below_one_is_refused(given):
    with pytest.raises(ValueError):
        bench.resolve_sizes(False, *given)


def test_a_goal_row_says_met_or_not_and_records_the_figure():
    rep = bench.Report()
    assert rep.goal("ratio build", 1.08, 1.10, key="build_ratio") is True
    assert rep.goal("ratio import", 1.30, 1.15, key="import_ratio") is False
    assert rep.goal("size delta", 0.014, 0.05, "{:.1%}", key="delta_size_ratio") is True
    assert rep.goal("not measured", None, 1.05, key="split_verify_ratio") is None
    assert [r[3] for r in rep.rows] == ["met", "NOT met", "met", ""]
    assert rep.rows[2][1:3] == ("1.4%", "<= 5.0%")
    assert rep.figures == {"build_ratio": 1.08, "import_ratio": 1.3, "delta_size_ratio": 0.014}


def test_the_table_aligns_its_columns_and_the_json_document_carries_it():
    rep = bench.Report()
    rep.section("BUILD")
    rep.row("bundle build --local [runs 2.0 2.2 2.1]", "2.1 s")
    rep.goal("  ratio", 1.2, 1.1, key="build_ratio")
    rep.fail("patch", "bundle build p.zst: exit 1: no such image")
    lines = rep.lines()
    assert lines[2] == "BUILD"
    assert lines[3].index("2.1 s") + len("2.1 s") == lines[4].index("1.20") + len("1.20")  # values right-aligned
    assert lines[4].endswith("NOT met")
    assert lines[-1] == "FAILED patch: bundle build p.zst: exit 1: no such image"
    doc = json.loads(json.dumps(rep.document("bundle bench: test")))
    assert doc["table"] == lines and doc["figures"] == {"build_ratio": 1.2}
    assert doc["rows"][2] == {"figure": "  ratio", "value": "1.20", "goal": "<= 1.10", "status": "NOT met"}
    assert doc["failures"] == ["patch: bundle build p.zst: exit 1: no such image"]
