"""Kept generations (importer.kinds.container.generations): which one `bundle rollback` returns to."""

from importer.kinds.container.generations import Generations


def gens_with(tmp_path, items, current):
    g = Generations(tmp_path)
    g.data = {"next": 10, "current": current, "items": {str(i["generation"]): i for i in items}}
    return g


def test_previous_lists_the_most_recently_displaced_first_without_the_current_or_pruned(tmp_path):
    g = gens_with(tmp_path, [
        {"generation": 1, "displaced_at": "2026-01-01T00:00:00Z"},
        {"generation": 2, "displaced_at": "2026-03-01T00:00:00Z"},
        {"generation": 3, "displaced_at": "2026-02-01T00:00:00Z"},
        {"generation": 4, "displaced_at": "2026-04-01T00:00:00Z", "pruned": True},
        {"generation": 5, "displaced_at": None},
    ], current=5)
    assert [i["generation"] for i in g.previous()] == [2, 3, 1]


def test_a_rollback_makes_an_older_generation_current_and_the_displaced_one_comes_first(tmp_path):
    # generation 3 was displaced by rolling back to 2, which was displaced earlier
    g = gens_with(tmp_path, [
        {"generation": 1, "displaced_at": "2026-01-01T00:00:00Z"},
        {"generation": 2, "displaced_at": "2026-02-01T00:00:00Z"},
        {"generation": 3, "displaced_at": "2026-05-01T00:00:00Z"},
    ], current=2)
    assert [i["generation"] for i in g.previous()] == [3, 1]


def test_same_displacement_time_puts_the_higher_generation_first(tmp_path):
    g = gens_with(tmp_path, [{"generation": 1, "displaced_at": "t"}, {"generation": 2, "displaced_at": "t"}],
                  current=None)
    assert [i["generation"] for i in g.previous()] == [2, 1]


def test_reading_a_missing_file_creates_nothing_and_allocation_never_reuses_a_number(tmp_path):
    g = Generations(tmp_path / "apps" / "demo")
    assert g.previous() == [] and g.current is None and not (tmp_path / "apps").exists()
    assert [g.allocate(), g.allocate()] == [1, 2] and g.data["next"] == 3
