"""The local branch's score: one continuous number per verified pair, comparable across queries.

Counting inliers (the ISC2021 image-fingerprint baseline) gives integer scores, and ISC2021's
micro-AP ranks ties pessimistically, so thousands of pairs tied at, say, 6 inliers all count as
if ranked below their worst member. Here the effective (distinct-position) inlier count ``n`` is
made continuous with a tie-breaker ``t`` that is strictly smaller than one inlier::

    q     = (inlier_ratio + (1 - mean_match_distance / sqrt(2))) / 2       in [0, 1]
    t     = 0.001 + 0.998 * q                                              in [0.001, 0.999]
    x     = n + t                                                          in (n, n + 1)
    score = x / (x + TAU)                                                  in (0, 1)

``x`` orders pairs by inliers first, then by how clean the matching is (fewer outlier matches,
closer descriptors), and never lets the tie-breaker overtake a whole inlier. ``x / (x + TAU)``
is strictly increasing, maps (0, ∞) into (0, 1) and, unlike ``1 - exp(-x / TAU)``, does not
round to exactly 1.0 in float64 for large counts (a 600-inlier pair stays distinguishable from a
599-inlier one). The score is a function of the pair alone, so it needs no per-query
normalization; ``TAU`` is the count at which the score reaches one half.

Pairs with no inliers keep a small positive score: micro-AP never drops when a prediction is
appended below all others (a false positive there precedes no true positive), and a true copy
found that way still adds recall.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from copydetect.atomic import atomic_path

logger = logging.getLogger(__name__)

TAU = 20.0  # effective inliers at which the score is 0.5
_T_MIN, _T_SPAN = 0.001, 0.998  # tie-breaker t ∈ [0.001, 0.999]: strictly inside one inlier
PREDICTION_COLUMNS = ["query_id", "reference_id", "score"]


def tie_breaker(pairs: pd.DataFrame) -> pd.Series:
    """``t`` in [0.001, 0.999]: higher for a larger inlier ratio and closer descriptors.

    Missing values count as the worst case (ratio 0, the largest RootSIFT distance √2).
    """
    ratio = pairs["inlier_ratio"].astype(float).fillna(0.0).clip(0.0, 1.0)
    distance = pairs["mean_match_distance"].astype(float).fillna(math.sqrt(2.0))
    closeness = (1.0 - distance / math.sqrt(2.0)).clip(0.0, 1.0)
    return _T_MIN + _T_SPAN * (ratio + closeness) / 2.0


def local_score(pairs: pd.DataFrame) -> pd.Series:
    """Continuous score in (0, 1) of verified pairs (see the module docstring for the formula).

    Needs the ``inliers``, ``inlier_ratio`` and ``mean_match_distance`` columns of
    :func:`copydetect.verify.verify_candidates`.
    """
    inliers = pairs["inliers"].astype(float).fillna(0.0).clip(lower=0.0)
    x = inliers + tie_breaker(pairs)
    return (x / (x + TAU)).rename("score")


def _best_per_pair(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per (query, reference): a pair verified by several branches keeps its best."""
    scored = pairs.loc[:, ["query_id", "reference_id"]].copy()
    scored["score"] = local_score(pairs).to_numpy()
    scored = scored.sort_values(
        ["query_id", "reference_id", "score"], ascending=[True, True, False], kind="stable"
    )
    return scored.drop_duplicates(["query_id", "reference_id"], keep="first")


def empty_predictions() -> pd.DataFrame:
    """A predictions table with no rows (string ids, float scores)."""
    return pd.DataFrame(
        {c: pd.Series(dtype=float if c == "score" else str) for c in PREDICTION_COLUMNS}
    )


def select_predictions(
    scored: pd.DataFrame,
    top_k_per_query: int | None = None,
    max_predictions: int | None = None,
    score_column: str = "score",
) -> pd.DataFrame:
    """The kept predictions ``query_id, reference_id, score`` of scored pairs.

    Rows whose ``score_column`` is NaN are dropped (the branch has no score for them). Keeps each
    query's ``top_k_per_query`` best references, then the ``max_predictions`` best rows overall
    (``None`` = no limit). Sorted by score descending, ties by query_id then reference_id, so the
    output does not depend on the input row order. ``(query, reference)`` must be unique.
    """
    scored = scored.loc[scored[score_column].notna(), ["query_id", "reference_id", score_column]]
    scored = scored.rename(columns={score_column: "score"}).astype({"score": float})
    scored = scored.sort_values(
        ["score", "query_id", "reference_id"], ascending=[False, True, True], kind="stable"
    )
    if top_k_per_query is not None:
        scored = scored[scored.groupby("query_id", sort=False).cumcount() < top_k_per_query]
    if max_predictions is not None:
        scored = scored.head(max_predictions)
    return scored.reset_index(drop=True)


def predictions_from_pairs(
    pairs_tables: Sequence[pd.DataFrame],
    top_k_per_query: int | None = None,
    max_predictions: int | None = None,
) -> pd.DataFrame:
    """Predictions ``query_id, reference_id, score`` of verified pair tables by the local score.

    A pair present in several tables keeps its best score; then :func:`select_predictions`.
    """
    tables = [t for t in pairs_tables if len(t)]
    if not tables:
        return empty_predictions()
    scored = select_predictions(
        _best_per_pair(pd.concat(tables, ignore_index=True)), top_k_per_query, max_predictions
    )
    logger.info(
        "%d predictions for %d queries (score range %.4g–%.4g)",
        len(scored),
        scored["query_id"].nunique(),
        scored["score"].min() if len(scored) else np.nan,
        scored["score"].max() if len(scored) else np.nan,
    )
    return scored


def write_predictions(predictions: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``query_id,reference_id,score`` atomically.

    Scores are written with Python's shortest round-trip repr (pandas' default), never rounded
    to a fixed number of digits: rounding would merge nearby scores into ties, which ISC2021's
    micro-AP ranks pessimistically.
    """
    with atomic_path(path) as tmp:
        predictions.loc[:, PREDICTION_COLUMNS].to_csv(tmp, index=False)
