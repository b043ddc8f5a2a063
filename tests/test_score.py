"""Local score: continuous, monotone in inliers, in (0, 1); predictions ordering and limits."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from copydetect.score import local_score, predictions_from_pairs, write_predictions


def pairs(inliers, ratio=0.5, distance=0.5, queries=None, references=None) -> pd.DataFrame:
    n = len(inliers)
    return pd.DataFrame(
        {
            "query_id": queries or [f"Q{i}" for i in range(n)],
            "reference_id": references or [f"R{i}" for i in range(n)],
            "inliers": inliers,
            "inlier_ratio": np.broadcast_to(ratio, n).astype(float),
            "mean_match_distance": np.broadcast_to(distance, n).astype(float),
        }
    )


def test_scores_lie_strictly_inside_the_unit_interval() -> None:
    table = pairs(
        [0, 0, 1, 600, 5000], ratio=[0, 1, 0.5, 1, 1], distance=[math.sqrt(2), 0, 1, 0, 0]
    )
    scores = local_score(table)
    assert ((scores > 0) & (scores < 1)).all()
    assert scores.is_unique


def test_one_more_inlier_beats_any_tie_breaker() -> None:
    counts = np.arange(0, 601)
    worst = local_score(pairs(counts, ratio=0.0, distance=math.sqrt(2)))
    best = local_score(pairs(counts, ratio=1.0, distance=0.0))
    assert (np.diff(worst) > 0).all() and (best > worst).all()
    assert (worst.to_numpy()[1:] > best.to_numpy()[:-1]).all()


def test_equal_inliers_are_separated_by_the_tie_breakers() -> None:
    scores = local_score(pairs([7, 7, 7], ratio=[0.2, 0.5, 0.5], distance=[0.4, 0.4, 0.3]))
    assert scores[0] < scores[1] < scores[2]


def test_missing_evidence_counts_as_worst() -> None:
    table = pairs([3, 3], ratio=[np.nan, 0.0], distance=[np.nan, math.sqrt(2)])
    scores = local_score(table)
    assert scores[0] == scores[1] and 0 < scores[0] < 1


def test_predictions_keep_top_k_and_sort_with_id_ties() -> None:
    table = pairs(
        [10, 30, 20, 10, 10],
        queries=["Q2", "Q1", "Q1", "Q1", "Q0"],
        references=["R9", "R1", "R2", "R3", "R9"],
    )
    predictions = predictions_from_pairs([table], top_k_per_query=2)
    assert list(predictions.columns) == ["query_id", "reference_id", "score"]
    assert list(zip(predictions.query_id, predictions.reference_id, strict=True)) == [
        ("Q1", "R1"),
        ("Q1", "R2"),
        ("Q0", "R9"),  # equal scores: by query id
        ("Q2", "R9"),
    ]
    assert len(predictions_from_pairs([table], max_predictions=3)) == 3


def test_a_pair_from_several_tables_keeps_its_best_score() -> None:
    weak = pairs([2], queries=["Q"], references=["R"])
    strong = pairs([40], queries=["Q"], references=["R"])
    predictions = predictions_from_pairs([weak, strong, pairs([])])
    assert len(predictions) == 1
    assert predictions.score[0] == pytest.approx(local_score(strong)[0])


def test_no_pairs_give_an_empty_table() -> None:
    empty = predictions_from_pairs([pairs([])])
    assert empty.empty and list(empty.columns) == ["query_id", "reference_id", "score"]


def test_written_scores_keep_every_distinction(tmp_path) -> None:
    counts = np.repeat(np.arange(0, 600), 3)
    ratios = np.tile([0.30, 0.300001, 0.300002], 600)
    predictions = predictions_from_pairs([pairs(counts, ratio=ratios)])
    assert predictions.score.is_unique
    write_predictions(predictions, tmp_path / "predictions.csv")
    back = pd.read_csv(tmp_path / "predictions.csv", dtype={"query_id": str, "reference_id": str})
    assert back.score.is_unique
    np.testing.assert_array_equal(back.score.to_numpy(), predictions.score.to_numpy())
