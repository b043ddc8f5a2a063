"""ISC2021 matching-track metrics on hand-computed cases."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from script_runner import run_script

from copydetect.metrics import (
    GroundTruthMatch,
    PredictedMatch,
    average_precision,
    evaluate,
    plot_pr_curve,
    precision_recall_curve,
    read_ground_truth,
    read_predictions,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def gt(*pairs: str) -> list[GroundTruthMatch]:
    """``gt("q1 r1", "q2 r2")`` -> ground-truth pairs."""
    return [GroundTruthMatch(*p.split()) for p in pairs]


def preds(*rows: tuple[str, str, float]) -> list[PredictedMatch]:
    return [PredictedMatch(q, r, s) for q, r, s in rows]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# micro-AP


def test_perfect_ranking_has_ap_one():
    m = evaluate(
        gt("q1 r1", "q2 r2"),
        preds(("q1", "r1", 0.9), ("q2", "r2", 0.8), ("q1", "r5", 0.3)),
    )
    assert m.micro_ap == pytest.approx(1.0)
    assert m.recall_at_p90 == pytest.approx(1.0)
    assert m.threshold_at_p90 == pytest.approx(0.8)
    assert (m.n_predictions, m.n_positives, m.n_queries) == (3, 2, 2)


def test_mixed_ranking_matches_hand_computed_ap():
    # Ranked: P N P N P -> precision at the positives 1, 2/3, 3/5; three positives.
    p = preds(
        ("q3", "r3", 0.5),  # input order must not matter
        ("q1", "r1", 0.9),
        ("q2", "r9", 0.8),
        ("q2", "r2", 0.7),
        ("q4", "r4", 0.6),  # query absent from the ground truth: a negative
    )
    m = evaluate(gt("q1 r1", "q2 r2", "q3 r3"), p)
    assert m.micro_ap == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)  # 34/45
    assert m.recall_at_p90 == pytest.approx(1 / 3)
    assert m.threshold_at_p90 == pytest.approx(0.9)


def test_missed_ground_truth_pair_lowers_ap_and_recall():
    p = preds(("q1", "r1", 0.9), ("q2", "r9", 0.8), ("q2", "r2", 0.7))
    m = evaluate(gt("q1 r1", "q2 r2", "q5 r5"), p)
    assert m.micro_ap == pytest.approx((1 + 2 / 3) / 3)
    precision, recall, thresholds = precision_recall_curve(gt("q1 r1", "q2 r2", "q5 r5"), p)
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3])
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(thresholds, [0.9, 0.8, 0.7])


def test_average_precision_is_the_isc2021_step_sum():
    precision = np.array([1.0, 0.5, 2 / 3, 0.5])
    recall = np.array([0.5, 0.5, 1.0, 1.0])
    assert average_precision(precision, recall) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    with pytest.raises(ValueError, match="non-decreasing"):
        average_precision(precision[::-1], recall[::-1])


@pytest.mark.parametrize("positive_first_in_file", [True, False])
def test_ties_are_ranked_pessimistically(positive_first_in_file: bool):
    rows = [("q1", "r1", 0.5), ("q2", "r2", 0.5)]  # q1 r1 is the positive
    if not positive_first_in_file:
        rows.reverse()
    tied = evaluate(gt("q1 r1"), preds(*rows))
    strict = evaluate(gt("q1 r1"), preds(("q1", "r1", 0.6), ("q2", "r2", 0.5)))
    assert tied.micro_ap == pytest.approx(0.5)  # the negative is ranked first
    assert strict.micro_ap == pytest.approx(1.0)
    assert tied.micro_ap < strict.micro_ap
    assert tied.recall_at_p90 == 0.0 and tied.threshold_at_p90 is None


def test_constant_scores_get_the_worst_order():
    # N N P P: precision at the positives 1/3 and 2/4.
    p = preds(("q1", "r1", 1.0), ("q2", "r2", 1.0), ("q1", "x", 1.0), ("q2", "y", 1.0))
    assert evaluate(gt("q1 r1", "q2 r2"), p).micro_ap == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_duplicate_rows_count_once_at_their_highest_score():
    p = preds(("q1", "r1", 0.2), ("q2", "r2", 0.5), ("q1", "r1", 0.9), ("q1", "r1", 0.1))
    m = evaluate(gt("q1 r1"), p)
    assert m.n_predictions == 2
    assert m.micro_ap == pytest.approx(1.0)  # r1 kept at 0.9, above the negative
    precision, recall, _ = precision_recall_curve(gt("q1 r1"), p)
    assert recall.max() == pytest.approx(1.0)  # one true pair never adds two positives
    assert len(precision) == 2


def test_duplicate_ground_truth_pairs_count_once():
    m = evaluate(gt("q1 r1", "q1 r1"), preds(("q1", "r1", 0.9)))
    assert m.n_positives == 1 and m.micro_ap == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# Recall at P90 and at rank k


def test_recall_at_p90_keeps_a_precision_of_exactly_point_nine():
    # Ranks: 9 positives, a negative (precision 9/10 = 0.9), a positive (10/11), a negative.
    labels = [True] * 9 + [False, True, False]
    matches, rows = [], []
    for i, positive in enumerate(labels):
        rows.append((f"q{i}", f"r{i}" if positive else "other", 1.0 - i / 100))
        if positive:
            matches.append(GroundTruthMatch(f"q{i}", f"r{i}"))
    m = evaluate(matches, preds(*rows))
    assert m.recall_at_p90 == pytest.approx(1.0)
    assert m.threshold_at_p90 == pytest.approx(1.0 - 10 / 100)  # the 11th rank


def test_threshold_at_p90_is_the_last_positive_not_the_negatives_after_it():
    # 11 ground-truth pairs (one never predicted); ranks: 9 positives, N, N, P.
    # Precision >= 0.9 holds at ranks 1..10 (rank 10: 9/10); recall is 9/11 at ranks 9 and 10.
    labels = [True] * 9 + [False, False, True]
    matches, rows = [], []
    for i, positive in enumerate(labels):
        rows.append((f"q{i}", f"r{i}" if positive else "other", 1.0 - i / 100))
        if positive:
            matches.append(GroundTruthMatch(f"q{i}", f"r{i}"))
    matches.append(GroundTruthMatch("missing", "r"))
    m = evaluate(matches, preds(*rows))
    assert m.n_positives == 11
    assert m.recall_at_p90 == pytest.approx(9 / 11)
    assert m.threshold_at_p90 == pytest.approx(1.0 - 8 / 100)  # the 9th rank's score


def test_recall_at_rank_1_and_10():
    rows = [
        ("q1", "a", 0.9),
        ("q1", "r1", 0.8),  # rank 1: top-10 only
        ("q2", "r2", 0.1),  # rank 0 although its score is low overall
        ("q5", "r5", 0.5),
        ("q5", "x", 0.5),  # tie: r5 is ranked second
    ]
    rows += [("q3", f"x{i}", 0.9 - i / 100) for i in range(11)]
    rows.append(("q3", "r3", 0.5))  # rank 11: outside the top 10
    m = evaluate(gt("q1 r1", "q2 r2", "q3 r3", "q4 r4", "q5 r5"), preds(*rows))
    assert m.recall_at_rank1 == pytest.approx(1 / 5)  # q2
    assert m.recall_at_rank10 == pytest.approx(3 / 5)  # q1, q2, q5


# ---------------------------------------------------------------------------------------------
# Degenerate inputs


def test_distractor_queries_are_listed_but_have_no_positive(tmp_path: Path):
    truth = read_ground_truth(write(tmp_path / "gt.csv", "query_id,reference_id\nq1,r1\nq2,\n"))
    assert truth.matches == gt("q1 r1")
    assert truth.query_ids == {"q1", "q2"}
    p = preds(("q2", "r7", 0.95), ("q1", "r1", 0.9))  # a confident match on a distractor
    m = evaluate(truth.matches, p, truth.query_ids)
    assert m.micro_ap == pytest.approx(0.5)
    assert (m.n_positives, m.n_queries) == (1, 2)


def test_no_positives_gives_zeros_without_warnings():
    with np.errstate(all="raise"):
        m = evaluate([], preds(("q1", "r1", 0.9), ("q2", "r2", 0.8)), query_ids={"q1", "q2"})
    assert m.micro_ap == 0.0 and m.recall_at_p90 == 0.0 and m.threshold_at_p90 is None
    assert m.recall_at_rank1 == 0.0 and m.recall_at_rank10 == 0.0
    assert (m.n_predictions, m.n_positives, m.n_queries) == (2, 0, 2)


def test_empty_predictions():
    m = evaluate(gt("q1 r1"), [])
    assert m.micro_ap == 0.0 and m.recall_at_p90 == 0.0 and m.threshold_at_p90 is None
    assert m.recall_at_rank1 == 0.0 and m.n_predictions == 0
    precision, recall, thresholds = precision_recall_curve(gt("q1 r1"), [])
    assert precision.size == recall.size == thresholds.size == 0


def test_to_dict_is_json_ready():
    d = evaluate(gt("q1 r1"), preds(("q1", "r1", 0.5))).to_dict()
    assert set(d) == {
        "micro_ap",
        "recall_at_p90",
        "threshold_at_p90",
        "recall_at_rank1",
        "recall_at_rank10",
        "n_predictions",
        "n_positives",
        "n_queries",
    }
    assert json.loads(json.dumps(d)) == d


# ---------------------------------------------------------------------------------------------
# Readers


def test_read_predictions(tmp_path: Path):
    path = write(tmp_path / "p.csv", "query_id,reference_id,score\nq1,r1,0.5\n\nq2,r2,-1e-3\n")
    assert read_predictions(path) == preds(("q1", "r1", 0.5), ("q2", "r2", -1e-3))


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("q1,r1,0.5\nq2,r2\n", 3, "expected 3 fields"),
        ("q1,r1,0.5,extra\n", 2, "expected 3 fields"),
        ("q1,r1,high\n", 2, "not a number"),
        ("q1,r1,nan\n", 2, "not finite"),
        ("q1,r1,inf\n", 2, "not finite"),
        ("q1,,0.5\n", 2, "empty"),
    ],
)
def test_malformed_predictions_name_file_and_line(tmp_path: Path, body, line, message):
    path = write(tmp_path / "p.csv", "query_id,reference_id,score\n" + body)
    with pytest.raises(ValueError, match=re.escape(f"{path}:{line}:") + ".*" + message):
        read_predictions(path)


@pytest.mark.parametrize("text", ["", "q1,r1,0.5\n", "query_id,reference_id\n"])
def test_predictions_without_header_are_rejected(tmp_path: Path, text: str):
    path = write(tmp_path / "p.csv", text)
    with pytest.raises(ValueError, match=re.escape(f"{path}:1:") + ".*header"):
        read_predictions(path)


@pytest.mark.parametrize(
    ("body", "message"), [("q1,r1,0.5\n", "expected 2 fields"), (",r1\n", "empty query_id")]
)
def test_malformed_ground_truth_names_file_and_line(tmp_path: Path, body, message):
    path = write(tmp_path / "gt.csv", "query_id,reference_id\nq0,r0\n" + body)
    with pytest.raises(ValueError, match=re.escape(f"{path}:3:") + ".*" + message):
        read_ground_truth(path)


# ---------------------------------------------------------------------------------------------
# Plot and rule script


@pytest.mark.parametrize("empty", [False, True])
def test_pr_curve_png_is_written(tmp_path: Path, empty: bool):
    p = [] if empty else preds(("q1", "r1", 0.9), ("q2", "x", 0.8), ("q2", "r2", 0.7))
    precision, recall, _ = precision_recall_curve(gt("q1 r1", "q2 r2"), p)
    out = tmp_path / "sub" / "pr.png"
    plot_pr_curve(precision, recall, out, "test")
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert [x.name for x in out.parent.iterdir()] == ["pr.png"]  # no temporary left behind


def test_evaluate_script_writes_metrics_and_curve(tmp_path: Path):
    predictions = write(
        tmp_path / "p.csv", "query_id,reference_id,score\nq1,r1,0.9\nq2,x,0.8\nq1,r1,0.1\n"
    )
    truth = write(tmp_path / "gt.csv", "query_id,reference_id\nq1,r1\nq2,\n")
    snakemake = SimpleNamespace(
        input=SimpleNamespace(predictions=str(predictions), ground_truth=str(truth)),
        output=SimpleNamespace(
            metrics=str(tmp_path / "metrics.json"), pr_curve=str(tmp_path / "pr.png")
        ),
        log=[str(tmp_path / "evaluate.log")],
    )
    run_script("evaluate.py", snakemake)
    text = (tmp_path / "metrics.json").read_text()
    metrics = json.loads(text)
    assert list(metrics) == sorted(metrics)
    assert metrics["micro_ap"] == pytest.approx(1.0)
    assert (metrics["n_predictions"], metrics["n_positives"], metrics["n_queries"]) == (2, 1, 2)
    assert (tmp_path / "pr.png").read_bytes().startswith(PNG_MAGIC)
