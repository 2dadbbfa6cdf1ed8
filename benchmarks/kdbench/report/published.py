"""Published numbers kept as data, to set our runs beside the papers' on the same dataset and pair.

Each row of ``published_*.csv`` beside this file names its source and whether the paper reports the
last epoch, the best epoch or does not say, because a best-epoch number is not comparable to our
final-epoch ranking without that caveat.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PUBLISHED_DIR = Path(__file__).parent
COLUMNS = ["dataset", "teacher", "student", "method", "acc", "source", "epoch_kind", "note"]


def published_table() -> pd.DataFrame:
    frames = [pd.read_csv(p, dtype={"note": str}, keep_default_na=False, na_values={"acc": [""]})
              for p in sorted(PUBLISHED_DIR.glob("published_*.csv"))]
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def published_for(dataset: str | None, teacher: str | None, student: str | None) -> pd.DataFrame:
    """The published rows for this dataset and (teacher, student) pair; empty when none match."""
    table = published_table()
    match = (table["dataset"] == dataset) & (table["teacher"] == teacher) & (table["student"] == student)
    return table[match].reset_index(drop=True)
