"""What the ``kdbench bench`` measurements share: their common options, A/B rounds in alternating
order with their ratios and median, fresh results folders that share one teacher cache, a timed run
of a suite, and markdown tables.

The machine is shared and noisy, so two things compared are measured within the same rounds, the
order flipping from one round to the next, and what is printed is the ratio per round and then the
median (docs/speed.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, NamedTuple, Sequence

from kdbench.config.suite import SuiteConfig
from kdbench.execute.driver import run_suite
from kdbench.run.request import RunRequest

# --- options ---------------------------------------------------------------------------------------

def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number ≥ ``minimum``; anything else is a one-line usage error."""

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return whole


#: A count of steps, rounds, repetitions...: a whole number ≥ 1.
count = at_least(1)


def add_suite(parser: argparse.ArgumentParser, default: str, what: str = "") -> None:
    parser.add_argument("--suite", default=default,
                        help=f"suite name or YAML path{what} (default {default})")


def add_rounds(parser: argparse.ArgumentParser, default: int, each: str) -> None:
    parser.add_argument("--rounds", type=count, default=default,
                        help=f"timed rounds, each running {each} (default {default})")


def add_teacher_cache(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", default="results",
                        help="where the teacher is cached (default results); the timed runs write elsewhere")


def with_train(suite: SuiteConfig, **changes: Any) -> SuiteConfig:
    """``suite`` with some of its training settings changed (epochs, batch_size)."""
    return dataclasses.replace(suite, train=dataclasses.replace(suite.train, **changes))


# --- A/B rounds ------------------------------------------------------------------------------------

def alternating(rounds: int, measure: Callable[[Hashable], Any], a: Hashable, b: Hashable) -> Iterator[dict]:
    """Per round, ``{a: measure(a), b: measure(b)}``: ``a`` first in even rounds, ``b`` first in odd
    ones, so neither side always gets the later (warmer, or more loaded) slot."""
    for r in range(rounds):
        yield {key: measure(key) for key in ((a, b) if r % 2 == 0 else (b, a))}


class WallRounds(NamedTuple):
    lines: list[str]  # the markdown table, one row a round
    ratios: list[float]  # a's wall time over b's, per round
    last: dict  # each side's records from the last round


def wall_rounds(rounds: int, timed: Callable[[Hashable], tuple[float, list[dict]]], a: Hashable, b: Hashable,
                columns: tuple[str, str]) -> WallRounds:
    """Alternating rounds of ``timed(a)`` and ``timed(b)`` (each: seconds, records); every round's
    row is printed as it ends."""
    lines, ratios, last = table_lines(["round", f"{columns[0]} s", f"{columns[1]} s", "ratio"]), [], {}
    for r, results in enumerate(alternating(rounds, timed, a, b)):
        (wall_a, last[a]), (wall_b, last[b]) = results[a], results[b]
        ratios.append(wall_a / wall_b)
        lines.append(table_row([r + 1, f"{wall_a:.1f}", f"{wall_b:.1f}", f"{ratios[-1]:.2f}×"]))
        print(lines[-1], flush=True)
    return WallRounds(lines, ratios, last)


def print_wall_rounds(title: str, rounds: WallRounds) -> None:
    print(f"\n{title}")
    print("\n".join(rounds.lines))
    print(f"median ratio over {len(rounds.ratios)} round(s): {statistics.median(rounds.ratios):.2f}×")


def median_ratio(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """The medians of ``a`` and ``b`` and the first over the second."""
    ma, mb = statistics.median(a), statistics.median(b)
    return ma, mb, ma / mb


# --- timed runs ------------------------------------------------------------------------------------

def teachers_folder(results_dir: str | Path) -> Path:
    """The teacher cache under ``results_dir``, made if missing, that every timed run links in."""
    teachers = Path(results_dir) / "teachers"
    teachers.mkdir(parents=True, exist_ok=True)
    return teachers


@contextmanager
def scratch_results(teachers: Path | None = None) -> Iterator[Path]:
    """A fresh results folder, removed afterwards, so nothing is skipped as done; ``teachers`` (when
    given) is linked in, so the teacher and the offline targets are read, not trained again."""
    with tempfile.TemporaryDirectory(prefix="kdbench-bench-") as tmp:
        if teachers is not None:
            (Path(tmp) / "teachers").symlink_to(teachers.resolve(), target_is_directory=True)
        yield Path(tmp)


def timed_run(suite: SuiteConfig, teachers: Path, **request: Any) -> tuple[float, list[dict]]:
    """Wall seconds and records of one silent run of ``suite`` into a scratch folder that shares
    ``teachers``; ``request`` holds the other ``RunRequest`` fields (seeds, device, executor, ...)."""
    with scratch_results(teachers) as tmp:
        req = RunRequest(suite, results_dir=str(tmp), progress=False, **request)
        t0 = time.perf_counter()
        records = run_suite(req, log=lambda _: None)
        return time.perf_counter() - t0, records


# --- tables ----------------------------------------------------------------------------------------

def table_row(cells: Sequence[Any]) -> str:
    """One markdown row; an empty cell is ``| |``."""
    return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"


def table_lines(header: Sequence[str], rows: Sequence[Sequence[Any]] = ()) -> list[str]:
    """A markdown table's lines: the header, its rule, then ``rows`` (cells already formatted)."""
    return [table_row(header), "|" + "---|" * len(header), *(table_row(r) for r in rows)]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return "\n".join(table_lines(header, rows))
