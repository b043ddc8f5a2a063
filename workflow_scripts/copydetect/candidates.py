"""Candidate pairs from several retrieval branches, joined into one table for verification.

Each branch (``local`` votes, a global model such as ``vlad`` or ``sscd``) proposes
(query, reference) pairs with its own evidence columns. Verification runs once per distinct
pair, so a pair proposed by a global branch alone can still get local evidence (when a model
ranks it within ``verify.global_only_max_rank``, see ``verify.pairs_to_verify``), and the pair
table keeps every branch's columns for fusion, prefixed by the branch name
(``local_votes``, ``vlad_similarity``, …; missing where a branch did not propose the pair).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import reduce

import pandas as pd

KEY_COLUMNS = ["query_id", "reference_id", "reference_shard"]


def _prefixed(branch: str, table: pd.DataFrame) -> pd.DataFrame:
    # Global tables name their columns global_*; the branch name replaces that prefix.
    renames = {
        column: f"{branch}_{column.removeprefix('global_')}"
        for column in table.columns
        if column not in KEY_COLUMNS
    }
    return table.rename(columns=renames)


def merge_candidates(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Outer-join the branches' candidates on (query, reference, reference shard).

    The result is sorted by (query_id, reference_id) and has one row per distinct pair.
    """
    frames = []
    for branch in sorted(tables):
        table = _prefixed(branch, tables[branch])
        missing = [c for c in KEY_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"candidates of branch {branch!r} lack columns {missing}")
        frames.append(table.drop_duplicates(KEY_COLUMNS))
    if not frames:
        return pd.DataFrame(columns=KEY_COLUMNS)
    merged = reduce(lambda left, right: left.merge(right, on=KEY_COLUMNS, how="outer"), frames)
    merged = merged.sort_values(["query_id", "reference_id"], kind="stable")
    return merged.reset_index(drop=True)
