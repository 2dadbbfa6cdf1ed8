"""A suite's ``tuning:`` section: how many trials each method gets, on which seeds, and the validation
split they are chosen on (parsed with the rest of the suite in :mod:`kdbench.config.suite`).

The rules follow AlgoPerf's external tuning: the same number of trials for every method, drawn
quasi-randomly from the space the method declares once for all suites, chosen on a split held out
of the training images, on seeds that are not the ones whose test accuracy is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Far beyond any tuning budget in use (AlgoPerf: 5 to 100 trials); catches a typo.
MAX_TRIALS = 10_000
#: The quasi-random sequence's scramble seed, the same for every method so that each draws the same
#: points of [0, 1)^d; recorded in every trial.
SAMPLER_SEED = 0


@dataclass(frozen=True)
class ValidationConfig:
    """A stratified split of the students' training images: ``fraction`` of each class, or ``size``
    images allocated to the classes in proportion; drawn with ``seed``."""

    fraction: float | None = 0.1
    size: int | None = None
    seed: int = 0

    def identity(self) -> dict:
        """What names the split in a trial's config hash and record."""
        how = {"size": self.size} if self.size is not None else {"fraction": self.fraction}
        return {**how, "seed": self.seed}


@dataclass(frozen=True)
class TuningConfig:
    trials: int = 8
    seeds: tuple[int, ...] = (1000,)
    validation: ValidationConfig = ValidationConfig()

    def sampler(self, dimensions: list[str]) -> dict:
        """How a method's trials 1… were drawn (trial 0 is its settings), as its records say it."""
        return {"name": "halton", "scramble": True, "seed": SAMPLER_SEED, "dimensions": dimensions}
