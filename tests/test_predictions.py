"""The predictions table: top-k per query, the cap, ties by id, every digit kept in the file."""

from __future__ import annotations

import numpy as np
import pandas as pd

from copydetect.predictions import (
    PREDICTION_COLUMNS,
    empty_predictions,
    select_predictions,
    write_predictions,
)


def scored(scores, queries=None, references=None, column: str = "score") -> pd.DataFrame:
    n = len(scores)
    return pd.DataFrame(
        {
            "query_id": queries or [f"Q{i}" for i in range(n)],
            "reference_id": references or [f"R{i}" for i in range(n)],
            column: np.asarray(scores, dtype=float),
        }
    )


def test_predictions_keep_top_k_and_sort_with_id_ties() -> None:
    table = scored(
        [0.1, 0.3, 0.2, 0.1, 0.1],
        queries=["Q2", "Q1", "Q1", "Q1", "Q0"],
        references=["R9", "R1", "R2", "R3", "R9"],
    )
    predictions = select_predictions(table, top_k_per_query=2)
    assert list(predictions.columns) == PREDICTION_COLUMNS
    assert list(zip(predictions.query_id, predictions.reference_id, strict=True)) == [
        ("Q1", "R1"),
        ("Q1", "R2"),
        ("Q0", "R9"),  # equal scores: by query id
        ("Q2", "R9"),
    ]
    assert len(select_predictions(table, max_predictions=3)) == 3
    shuffled = table.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(select_predictions(shuffled, 2), predictions)


def test_a_branch_column_drops_pairs_without_a_score() -> None:
    table = scored([0.5, np.nan, 0.7], column="branch_local")
    predictions = select_predictions(table, score_column="branch_local")
    assert predictions.reference_id.tolist() == ["R2", "R0"]
    assert predictions.score.tolist() == [0.7, 0.5]


def test_empty_predictions_have_the_columns() -> None:
    empty = empty_predictions()
    assert empty.empty and list(empty.columns) == PREDICTION_COLUMNS
    assert select_predictions(scored([])).empty


def test_written_scores_keep_every_distinction(tmp_path) -> None:
    scores = np.repeat(np.arange(600) / 600, 3) + np.tile([0.0, 1e-12, 2e-12], 600)
    predictions = select_predictions(scored(scores))
    assert predictions.score.is_unique
    write_predictions(predictions, tmp_path / "predictions.csv")
    back = pd.read_csv(tmp_path / "predictions.csv", dtype={"query_id": str, "reference_id": str})
    assert list(back.columns) == PREDICTION_COLUMNS
    np.testing.assert_array_equal(back.score.to_numpy(), predictions.score.to_numpy())
