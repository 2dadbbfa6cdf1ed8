"""How ``processes:N`` cuts a run's groups into jobs (:mod:`kdbench.execute.balance`): every cell in
exactly one job, a job within one group, and as many jobs per worker for every worker."""

from __future__ import annotations

import pytest
from kdbench.execute.balance import balanced


def seeds(n_groups: int, n_cells: int = 7) -> list[list[tuple[int, int]]]:
    return [[(seed, cell) for cell in range(n_cells)] for seed in range(n_groups)]


def test_three_seeds_on_two_workers_cut_the_third_in_two_dealt_in_turn_and_run_first():
    groups = seeds(3)
    jobs = balanced(groups, 2)
    assert jobs == [[(2, 0), (2, 2), (2, 4), (2, 6)], [(2, 1), (2, 3), (2, 5)], groups[0], groups[1]]


@pytest.mark.parametrize("n_groups,workers", [(2, 2), (4, 2), (6, 3), (5, 1)])
def test_groups_that_divide_evenly_among_the_workers_stay_whole(n_groups, workers):
    assert balanced(seeds(n_groups), workers) == seeds(n_groups)


@pytest.mark.parametrize("n_groups,workers,n_cells,n_jobs", [
    (1, 2, 7, 2), (3, 2, 7, 4), (5, 4, 7, 8), (4, 3, 7, 6), (3, 4, 7, 12), (2, 4, 7, 4), (1, 4, 2, 2),
])
def test_every_cell_once_each_job_within_a_group_and_the_parts_spread_evenly(n_groups, workers, n_cells, n_jobs):
    groups = seeds(n_groups, n_cells)
    jobs = balanced(groups, workers)
    assert len(jobs) == n_jobs and all(jobs)
    assert sorted(c for job in jobs for c in job) == sorted(c for g in groups for c in g)
    assert all(len({seed for seed, _ in job}) == 1 for job in jobs)
    cut = [job for job in jobs if job not in groups]
    if n_cells >= workers:  # enough cells to give each worker the same number of parts
        assert len(cut) % workers == 0
    assert jobs[len(cut):] == [g for g in groups if g in jobs]  # the parts first, then the whole groups
    sizes = [len(job) for job in cut]
    assert not sizes or max(sizes) - min(sizes) <= 1
