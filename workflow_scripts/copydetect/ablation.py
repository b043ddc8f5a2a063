"""Each branch alone: score the pair table by one evidence column and evaluate it.

The pair tables (``results/verify/*.pairs.csv``) hold every branch's evidence for every
candidate pair. Ranking all pairs by one column — local verification score, a global model's
similarity or its normalized form — gives that branch's own predictions, so branches can be
compared with the fused score on the same ground truth.

:func:`ablation` ranks the raw columns of verified pair tables (all pairs, no cap); the
evaluation rule uses :func:`ranked_predictions` on the fused, scored pair table instead, where
each branch's own calibrated score is ranked under the same per-query and total caps as the
fused predictions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import pandas as pd

from copydetect.atomic import atomic_path
from copydetect.fusion import branch_names
from copydetect.metrics import GroundTruth, Metrics, PredictedMatch, evaluate
from copydetect.score import local_score, select_predictions


def branch_scores(pairs: pd.DataFrame) -> dict[str, pd.Series]:
    """Score columns available in a pair table: ``local`` plus every ``*_similarity`` and
    ``*_normalized`` column of the global models (NaN where a branch did not propose a pair)."""
    scores = {"local": local_score(pairs)}
    for column in pairs.columns:
        if column.endswith(("_similarity", "_normalized")):
            scores[column] = pairs[column].astype(float)
    return scores


def predictions_by(pairs: pd.DataFrame, score: pd.Series) -> list[PredictedMatch]:
    """Predictions of the pairs that have a (finite) score in ``score``."""
    return [
        PredictedMatch(q, r, float(s))
        for q, r, s in zip(pairs["query_id"], pairs["reference_id"], score, strict=True)
        if not math.isnan(s)
    ]


def ablation(pair_tables: Sequence[pd.DataFrame], ground_truth: GroundTruth) -> dict[str, Metrics]:
    """Metrics of every branch alone over the concatenated pair tables."""
    pairs = pd.concat(list(pair_tables), ignore_index=True)
    return {
        name: evaluate(ground_truth.matches, predictions_by(pairs, score), ground_truth.query_ids)
        for name, score in branch_scores(pairs).items()
    }


# --- the evaluation's per-branch table (rule evaluate) -----------------------------------------

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


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a small result table as CSV, atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
