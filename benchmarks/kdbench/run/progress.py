"""Progress bars for long work: one bar over the suite's cells, one over the current epoch's steps.

Bars draw only on a terminal (tqdm's ``disable=None``); logs and CI get the one-line summaries alone.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, enabled: bool | None = None) -> None:
        disable = None if enabled is None else not enabled
        self.runs = tqdm(total=total, desc="runs", unit="run", position=0, disable=disable, file=sys.stderr)
        self.disable = disable
        self.epoch: tqdm | None = None

    def start_epoch(self, desc: str, steps: int) -> None:
        if self.epoch is not None:
            self.epoch.close()
        self.epoch = tqdm(total=steps, desc=desc, unit="step", position=1, leave=False,
                          disable=self.disable, file=sys.stderr)

    def step(self) -> None:
        if self.epoch is not None:
            self.epoch.update(1)

    def advance(self) -> None:
        self.runs.update(1)

    def write(self, line: str) -> None:
        tqdm.write(line, file=sys.stdout)

    def close(self) -> None:
        if self.epoch is not None:
            self.epoch.close()
        self.runs.close()


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
