"""Per-branch evaluation of a pair table."""

from __future__ import annotations

import pandas as pd

from copydetect.ablation import (
    ABLATION_COLUMNS,
    ablation_table,
    evaluate_each,
    ranked_predictions,
)
from copydetect.metrics import GroundTruth, GroundTruthMatch


def scored() -> pd.DataFrame:
    """A scored pair table as rule fuse writes it (fused score + each branch's own score)."""
    return pd.DataFrame(
        {
            "query_id": ["Q1", "Q1", "Q1", "Q2", "Q3"],
            "reference_id": ["R1", "R2", "R3", "R2", "R3"],
            "score": [0.9, 0.2, 0.1, 0.8, 0.3],
            "branch_local": [0.7, 0.1, 0.05, 0.6, 0.2],
            "branch_vlad": [0.3, 0.9, float("nan"), float("nan"), 0.4],
        }
    )


def test_every_ranking_gets_the_same_top_k_and_cap() -> None:
    ranked = ranked_predictions(scored(), top_k_per_query=2, max_predictions=3)
    assert list(ranked) == ["fused", "local", "vlad"]
    assert [(p.query, p.db) for p in ranked["fused"]] == [("Q1", "R1"), ("Q2", "R2"), ("Q3", "R3")]
    assert [(p.query, p.db) for p in ranked["vlad"]] == [("Q1", "R2"), ("Q3", "R3"), ("Q1", "R1")]
    assert all(len(predictions) <= 3 for predictions in ranked.values())


def test_ablation_table_rows() -> None:
    truth = GroundTruth(
        [GroundTruthMatch("Q1", "R1"), GroundTruthMatch("Q2", "R2")],
        frozenset({"Q1", "Q2", "Q3"}),
    )
    metrics = evaluate_each(ranked_predictions(scored(), 10, None), truth)
    table = ablation_table(metrics)
    assert list(table.columns) == ABLATION_COLUMNS
    assert table["branch"].tolist() == ["fused", "local", "vlad"]
    fused = table.iloc[0]
    assert (fused.micro_ap, fused.recall_at_p90, fused.recall_at_1) == (1.0, 1.0, 1.0)
    assert fused.threshold_at_p90 == 0.8 and fused.n_predictions == 5
    vlad = table.iloc[2]
    # vlad: Q1-R2 (wrong) first, Q3-R3 (wrong), then Q1-R1; Q2-R2 never proposed.
    assert vlad.micro_ap == (1 / 3) * 0.5 and vlad.recall_at_1 == 0.0
    assert pd.isna(vlad.threshold_at_p90) and vlad.n_predictions == 3
