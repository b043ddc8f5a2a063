"""Per-branch evaluation of a pair table."""

from __future__ import annotations

import pandas as pd

from copydetect.ablation import ablation, branch_scores
from copydetect.metrics import GroundTruth, GroundTruthMatch


def pairs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "query_id": ["Q1", "Q1", "Q2", "Q3"],
            "reference_id": ["R1", "R2", "R2", "R3"],
            "inliers": [40, 2, 30, 0],
            "inlier_ratio": [0.8, 0.1, 0.7, 0.0],
            "mean_match_distance": [0.3, 0.9, 0.4, 1.2],
            # the global model proposed Q1-R2 (wrong) above Q1-R1, and missed Q2-R2
            "vlad_similarity": [0.5, 0.9, float("nan"), 0.2],
        }
    )


def test_branch_scores_lists_local_and_global_columns() -> None:
    assert list(branch_scores(pairs())) == ["local", "vlad_similarity"]


def test_each_branch_is_evaluated_on_its_own_pairs() -> None:
    truth = GroundTruth(
        [GroundTruthMatch("Q1", "R1"), GroundTruthMatch("Q2", "R2")],
        frozenset({"Q1", "Q2", "Q3"}),
    )
    metrics = ablation([pairs().iloc[:2], pairs().iloc[2:]], truth)
    assert metrics["local"].micro_ap == 1.0
    # vlad ranks Q1-R2 (negative) first, then Q1-R1 (positive); Q2-R2 is never proposed.
    assert metrics["vlad_similarity"].micro_ap == 0.5 * 0.5
    assert metrics["vlad_similarity"].n_predictions == 3
