"""What a run says while it works: one bar over the suite's cells and one over the current epoch's
steps, and a line each time a group ends an epoch.

Bars draw only on a terminal (tqdm's ``disable=None``). The epoch lines are printed everywhere (a log
file, CI, a worker of an executor), so a run is never silent until a whole group ends; ``tell=None``
(``--quiet``) leaves them out. They read only the clock: no record changes by a bit for them.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from tqdm import tqdm


def above_bars(line: str) -> None:
    """Print ``line`` to stdout, above any bar being drawn."""
    tqdm.write(line, file=sys.stdout)


class Progress:
    """The bars (``enabled``: True, False, or None for a terminal only) and where the epoch lines go
    (``tell``; None: nowhere). Disabled, it builds no bar at all: a tqdm bar takes a multiprocessing
    lock, which a worker killed while holding would leave for the driver to warn about."""

    def __init__(self, total: int, enabled: bool | None = None,
                 tell: Callable[[str], None] | None = None) -> None:
        self.disable = None if enabled is None else not enabled
        self.runs = self._bar(total=total, desc="runs", unit="run", position=0)
        self.epoch: tqdm | None = None
        self.tell = tell

    def _bar(self, **kwargs) -> tqdm | None:
        return None if self.disable else tqdm(**kwargs, disable=self.disable, file=sys.stderr)

    def start_epoch(self, desc: str, steps: int) -> None:
        if self.epoch is not None:
            self.epoch.close()
        self.epoch = self._bar(total=steps, desc=desc, unit="step", position=1, leave=False)

    def step(self) -> None:
        if self.epoch is not None:
            self.epoch.update(1)

    def advance(self) -> None:
        if self.runs is not None:
            self.runs.update(1)

    def write(self, line: str) -> None:
        above_bars(line)

    def epoch_ended(self, line: str) -> None:
        if self.tell is not None:
            self.tell(line)

    def close(self) -> None:
        for bar in (self.epoch, self.runs):
            if bar is not None:
                bar.close()


def duration(seconds: float) -> str:
    """``12.3 s``, ``4 min 05 s``, ``2 h 10 min``: short, for a progress line."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes} min {s:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class EpochClock:
    """A group's epochs as they end: which group, which epoch of how many, how many cells still train,
    how long the epoch took, and how long the group should still take (the mean epoch so far, in
    this process, times the epochs left)."""

    def __init__(self, group: str, epochs: int) -> None:
        self.group, self.epochs, self.done = group, epochs, 0
        self.start = self.last = time.perf_counter()

    def line(self, epoch: int, training: int) -> str:
        now = time.perf_counter()
        took, self.last, self.done = now - self.last, now, self.done + 1
        left = (now - self.start) / self.done * (self.epochs - epoch - 1) if training else 0.0
        return (f"{self.group}: epoch {epoch + 1}/{self.epochs} in {duration(took)}, "
                f"{training} cell(s) still training, about {duration(left)} left")


class _Say(logging.Handler):
    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        self.say(record.getMessage())


@contextmanager
def forward_logs(say: Callable[[str], None]) -> Iterator[None]:
    """What code deep in a run logs (a cache recomputed, a lock waited for) reaches the run's own
    output, above the bars, instead of Python's bare stderr fallback."""
    logger, handler = logging.getLogger("kdbench"), _Say(say)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
