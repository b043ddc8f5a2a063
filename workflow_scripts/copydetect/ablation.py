"""Each branch alone: rank the scored pair table by one branch's score and evaluate it.

Rule fuse writes every branch's own calibrated score (``branch_*``) next to the fused ``score``;
ranking by each under the same per-query and total caps as predictions.csv compares the
branches with the fusion on the same ground truth and the same budget of rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from copydetect.fusion import branch_names
from copydetect.metrics import GroundTruth, Metrics, PredictedMatch, evaluate
from copydetect.predictions import select_predictions

FUSED = "fused"
ABLATION_COLUMNS = [
    "branch",
    "micro_ap",
    "recall_at_p90",
    "threshold_at_p90",
    "recall_at_1",
    "n_predictions",
]


def ranked_predictions(
    scored: pd.DataFrame, top_k_per_query: int | None, max_predictions: int | None
) -> dict[str, list[PredictedMatch]]:
    """Predictions of the fused score and of every branch alone, from a scored pair table.

    ``fused`` ranks the pairs by ``score``; branch ``b`` ranks the pairs it has evidence for by
    ``branch_b`` (its own calibrated score, see copydetect.fusion). Each list keeps the same
    ``top_k_per_query`` per query and ``max_predictions`` overall as predictions.csv, so every
    branch is judged on an equal budget of rows (the fused row then reproduces metrics.json).
    """
    columns = {FUSED: "score"} | {name: f"branch_{name}" for name in branch_names(scored)}
    ranked = {}
    for name, column in columns.items():
        kept = select_predictions(scored, top_k_per_query, max_predictions, score_column=column)
        ranked[name] = [
            PredictedMatch(q, r, float(s))
            for q, r, s in zip(kept["query_id"], kept["reference_id"], kept["score"], strict=True)
        ]
    return ranked


def evaluate_each(
    ranked: Mapping[str, Sequence[PredictedMatch]], ground_truth: GroundTruth
) -> dict[str, Metrics]:
    """:func:`copydetect.metrics.evaluate` of every list of :func:`ranked_predictions`."""
    return {
        name: evaluate(ground_truth.matches, predictions, ground_truth.query_ids)
        for name, predictions in ranked.items()
    }


def ablation_table(metrics: Mapping[str, Metrics]) -> pd.DataFrame:
    """One row per branch (``fused`` first): the ISC2021 figures of that branch alone.

    ``threshold_at_p90`` is empty where precision 0.9 is never reached.
    """
    rows = [
        {
            "branch": name,
            "micro_ap": m.micro_ap,
            "recall_at_p90": m.recall_at_p90,
            "threshold_at_p90": m.threshold_at_p90,
            "recall_at_1": m.recall_at_rank1,
            "n_predictions": m.n_predictions,
        }
        for name, m in metrics.items()
    ]
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)
