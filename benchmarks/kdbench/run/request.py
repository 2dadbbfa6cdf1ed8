"""One ``kdbench run`` as a single object: built once (by the CLI, a benchmark or a test) and handed
whole to planning, running, the executor's jobs and the driver, so no layer re-reads an option or
passes it on by position."""

from __future__ import annotations

from dataclasses import dataclass, field

from kdbench.api.errors import ConfigError
from kdbench.api.paths import RESULTS_ROOM, checked_path
from kdbench.config.executor import ExecutorConfig
from kdbench.config.suite import SuiteConfig


@dataclass(frozen=True)
class RunRequest:
    suite: SuiteConfig
    methods: tuple[str, ...] | None = None  # labels or names; None: the suite's
    seeds: tuple[int, ...] | None = None  # None: the suite's
    device: str = "auto"  # as the user gave it (``auto`` resolves on each worker's machine)
    data_dir: str | None = None
    download: bool = False
    results_dir: str = "results"
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # its threads: per cell's process
    progress: bool | None = None  # None: bars on a terminal
    quiet: bool = False  # True: no bars and no epoch lines, only each cell's line and the summary
    lockstep: bool = True  # False: each cell alone, with its own teacher pass (same records)
    max_group: int | None = None  # at most this many cells in a lockstep group (memory); None: a seed's all

    def __post_init__(self) -> None:  # lists from a caller become tuples: a request is hashable, picklable data
        for name in ("methods", "seeds"):
            if (v := getattr(self, name)) is not None:
                object.__setattr__(self, name, tuple(v))
        checked_path(self.results_dir, "--results-dir", RESULTS_ROOM)  # one a system call cannot take: one line
        object.__setattr__(self, "results_dir", str(self.results_dir))
        if self.data_dir is not None:
            checked_path(self.data_dir, "--data-dir")
        if self.max_group is not None and (isinstance(self.max_group, bool) or self.max_group < 1):
            raise ConfigError(f"--max-group must be at least 1, got {self.max_group}")
