"""Groups cut into jobs so that the workers of ``processes:N`` end together.

A lockstep group is one job, and a worker runs one job at a time. When the groups do not divide
evenly among the workers (three seeds on two workers), the last round leaves workers idle while
one group finishes: there, the run takes a third longer than its work needs. So the r groups left
over once every worker has a whole group per round are each cut into k = W / gcd(r, W) parts, whose
r·k jobs divide evenly among the W workers. A part is still a lockstep group (its own teacher pass per batch), and a cell's
record does not depend on the group it trained in (docs/guarantees.md), so only the time changes.

The cells are dealt to the parts in turn, in plan order, so that no part gets all the costly
methods of a suite sorted by name; the parts are run first, so that what the first cells of a
method compute once (offline targets) is computed by several workers at the same time rather than
waited for.
"""

from __future__ import annotations

import math
from typing import TypeVar

T = TypeVar("T")


def balanced(groups: list[list[T]], workers: int) -> list[list[T]]:
    """``groups`` as jobs for ``workers`` processes running one job each at a time: the leftover
    groups cut into parts, which come first, then the whole groups in their order."""
    r = len(groups) % workers
    if r == 0:
        return list(groups)
    k = workers // math.gcd(r, workers)
    cut, whole = groups[len(groups) - r:], groups[:len(groups) - r]
    parts = [group[i::k] for group in cut for i in range(min(k, len(group)))]
    return parts + list(whole)
