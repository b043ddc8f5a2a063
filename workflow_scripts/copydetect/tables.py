"""CSV tables of the workflow (candidates, pairs, votes, predictions): one reader, one writer."""

from __future__ import annotations

import os

import pandas as pd

from copydetect.atomic import atomic_path

ID_COLUMNS = ("query_id", "reference_id", "reference_shard")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a candidates or pairs CSV with the id columns as exact strings.

    Ids like ``000123`` or ``NA`` must survive: they are read as text, with no NA parsing;
    the other columns parse normally (an empty field is NaN).
    """
    header = pd.read_csv(path, nrows=0).columns
    ids = [c for c in header if c in ID_COLUMNS]
    return pd.read_csv(
        path,
        dtype={c: str for c in ids},
        keep_default_na=False,
        na_values={c: ["", "nan", "NaN"] for c in header if c not in ids},
    )


def write_csv(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a table as CSV atomically (header always, so an empty table is a valid file)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
