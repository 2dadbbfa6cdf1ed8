"""What the `kdbench bench` measurements share (kdbench.bench.common): alternating rounds, ratios and
their median, scratch results folders, markdown tables."""

from __future__ import annotations

from pathlib import Path

from kdbench.bench.common import alternating, markdown_table, median_ratio, scratch_results, wall_rounds


def test_alternating_rounds_flip_the_order():
    calls = []
    results = list(alternating(3, lambda k: calls.append(k) or k * 10, "a", "b"))
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert results == [{"a": "a" * 10, "b": "b" * 10}] * 3


def test_wall_rounds_print_each_round_and_the_median_ratio(capsys):
    walls = iter([4.0, 2.0, 1.0, 3.0, 6.0, 2.0])  # round 1: a, b; round 2: b, a; round 3: a, b
    rounds = wall_rounds(3, lambda key: (next(walls), [key]), "a", "b", ("one", "two"))
    assert rounds.ratios == [2.0, 3.0, 3.0] and rounds.last == {"a": ["a"], "b": ["b"]}
    assert rounds.lines[:3] == ["| round | one s | two s | ratio |", "|---|---|---|---|", "| 1 | 4.0 | 2.0 | 2.00× |"]
    assert capsys.readouterr().out.splitlines() == rounds.lines[2:]
    assert median_ratio([1.0, 5.0, 3.0], [1.0, 1.0, 2.0]) == (3.0, 1.0, 3.0)


def test_tables_and_scratch_folders():
    assert markdown_table(["k", "acc"], [[2, "81.00"], ["ce", ""]]) == "| k | acc |\n|---|---|\n| 2 | 81.00 |\n| ce | |"
    with scratch_results() as empty:
        assert empty.is_dir() and not any(empty.iterdir())
    assert not empty.exists()


def test_a_scratch_folder_links_the_teachers(tmp_path):
    teachers = tmp_path / "results" / "teachers"
    teachers.mkdir(parents=True)
    with scratch_results(teachers) as folder:
        assert (folder / "teachers").resolve() == teachers.resolve() and Path(folder, "teachers").is_symlink()
    assert teachers.is_dir()
