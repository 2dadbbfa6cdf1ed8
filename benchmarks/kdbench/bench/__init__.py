"""``kdbench bench NAME``: measurements of the harness's speed and of methods' costs.

Each is a module with ``SUMMARY`` (its line in ``kdbench bench --help``), ``add_arguments(parser)``
and ``run(args) -> int``; what they share is in ``kdbench.bench.common``. Errors are raised as
``KDBenchError`` and printed by the CLI as one line.
"""

from __future__ import annotations

from types import ModuleType

from kdbench.bench import bregman_sweep, executors, kernel_cost, layout, lockstep, speed, suite, wait_policy

#: The command names, in the order ``kdbench bench --help`` lists them.
BENCHES: dict[str, ModuleType] = {
    "suite": suite,
    "speed": speed,
    "lockstep": lockstep,
    "layout": layout,
    "executors": executors,
    "kernel-cost": kernel_cost,
    "bregman-sweep": bregman_sweep,
    "wait-policy": wait_policy,
}
