"""Each branch alone: score the pair table by one evidence column and evaluate it.

The pair tables (``results/verify/*.pairs.csv``) hold every branch's evidence for every
candidate pair. Ranking all pairs by one column — local verification score, a global model's
similarity or its normalized form — gives that branch's own predictions, so branches can be
compared with the fused score on the same ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from copydetect.metrics import GroundTruth, Metrics, PredictedMatch, evaluate
from copydetect.score import local_score


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
