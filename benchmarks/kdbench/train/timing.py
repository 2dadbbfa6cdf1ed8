"""Accumulated time of repeated regions (a cell's steps, the shared teacher pass), never syncing the
training step: wall clock on the CPU, CUDA events on a GPU, read only when asked (at an epoch's end).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch


class Timer:
    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def region(self) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((start, end))
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._seconds += time.perf_counter() - t0

    def seconds(self) -> float:
        """Total so far (on CUDA this waits for the recorded regions to complete)."""
        if self._events:
            self._events[-1][1].synchronize()
            self._seconds += sum(s.elapsed_time(e) for s, e in self._events) / 1000.0
            self._events.clear()
        return self._seconds
