"""The predictions table ``query_id,reference_id,score`` (isc2021's format): selection and file.

Scores must stay continuous: ISC2021's micro-AP ranks ties pessimistically, so the file keeps
every digit and the selection breaks equal scores by id, never by input order.
"""

from __future__ import annotations

import os

import pandas as pd

from copydetect.tables import write_csv

PREDICTION_COLUMNS = ["query_id", "reference_id", "score"]


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


def write_predictions(predictions: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``query_id,reference_id,score`` atomically.

    Scores are written with Python's shortest round-trip repr (pandas' default), never rounded
    to a fixed number of digits: rounding would merge nearby scores into ties, which ISC2021's
    micro-AP ranks pessimistically.
    """
    write_csv(path, predictions.loc[:, PREDICTION_COLUMNS])
