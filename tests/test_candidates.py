"""Joining the branches' candidate tables."""

from __future__ import annotations

import pandas as pd
import pytest

from copydetect.candidates import merge_candidates


def table(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["query_id", "reference_id", "reference_shard", *columns])


def test_union_keeps_every_branch_column_prefixed() -> None:
    local = table([("Q1", "R1", "s0000", 12), ("Q1", "R2", "s0001", 3)], ["votes"])
    vlad = table(
        [("Q1", "R2", "s0001", 0.8, 0.3), ("Q2", "R9", "s0001", 0.5, 0.1)],
        ["global_similarity", "global_normalized"],
    )
    merged = merge_candidates({"vlad": vlad, "local": local})
    assert list(merged.columns) == [
        "query_id",
        "reference_id",
        "reference_shard",
        "local_votes",
        "vlad_similarity",
        "vlad_normalized",
    ]
    assert merged[["query_id", "reference_id"]].values.tolist() == [
        ["Q1", "R1"],
        ["Q1", "R2"],
        ["Q2", "R9"],
    ]
    assert merged.loc[1, "local_votes"] == 3 and merged.loc[1, "vlad_similarity"] == 0.8
    assert pd.isna(merged.loc[0, "vlad_similarity"]) and pd.isna(merged.loc[2, "local_votes"])


def test_single_branch_and_no_branch() -> None:
    local = table([("Q1", "R1", "s0000", 12), ("Q1", "R1", "s0000", 12)], ["votes"])
    assert len(merge_candidates({"local": local})) == 1
    assert list(merge_candidates({}).columns) == ["query_id", "reference_id", "reference_shard"]


def test_missing_key_column_is_an_error() -> None:
    with pytest.raises(ValueError, match="branch 'vlad' lack"):
        merge_candidates({"vlad": pd.DataFrame({"query_id": ["Q1"], "reference_id": ["R1"]})})
