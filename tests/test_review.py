"""The reviewer's labels: reading and checking the gallery's export, evaluating on the reviewed
queries only (rule evaluate_review) and fitting the logistic fusion on reviewed pairs."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from script_runner import run_script
from test_fusion import random_pairs, write_tables

from copydetect.fusion import (
    FusionModel,
    RuleConstants,
    feature_table,
    fit_logistic,
    fit_logistic_groups,
)
from copydetect.metrics import PredictedMatch
from copydetect.review import read_review_labels, reviewed_pairs, reviewed_predictions


def labels_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "review_labels.csv"
    path.write_text(text, encoding="utf-8")
    return path


# --- reading and checking ---------------------------------------------------------------------


def test_the_gallery_export_reads_as_labels(tmp_path: Path) -> None:
    path = labels_file(
        tmp_path,
        "query_id,reference_id\n"
        "Q1,R1\n"
        "Q1,R2\n"  # two copies of one query
        "Q2,\n"  # judged: no copy
        "Q1,R1\n"  # a repeated row counts once
        '"a,b""c",R3\n'  # CSV quoting, as the gallery writes an id with a comma or a quote
        "\n",  # blank lines are skipped
    )
    labels = read_review_labels(path)
    assert [(m.query, m.db) for m in labels.matches] == [
        ("Q1", "R1"),
        ("Q1", "R2"),
        ('a,b"c', "R3"),
    ]
    assert labels.query_ids == {"Q1", "Q2", 'a,b"c'}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("query,reference\nQ1,R1\n", r":1: expected header 'query_id,reference_id'"),
        ("query_id,reference_id\nQ1,R1\nQ2,R2,0.9\n", r":3: expected 2 fields, got 3"),
        ("query_id,reference_id\nQ1,R1\n,R2\n", r":3: empty query_id"),
        (
            "query_id,reference_id\nQ1,R1\nQ2,\nQ1,\n",
            r":4: query 'Q1' is marked as having no copy \(line 4\) and as a copy of 'R1' "
            r"\(line 2\)",
        ),
        (
            "query_id,reference_id\nQ2,\nQ2,R5\n",
            r":3: query 'Q2' is marked as having no copy \(line 2\) and as a copy of 'R5'",
        ),
        ("query_id,reference_id\n", r"no labeled query"),
        ("", r":1: expected header"),
    ],
)
def test_bad_labels_are_a_clear_error_naming_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = labels_file(tmp_path, text)
    with pytest.raises(ValueError, match=message) as error:
        read_review_labels(path)
    assert str(path) in str(error.value)


def test_only_reviewed_queries_are_evaluated() -> None:
    labels = read_review_labels_from_rows([("Q1", "R1"), ("Q2", "")])
    predictions = [
        PredictedMatch("Q1", "R1", 0.9),
        PredictedMatch("Q9", "R9", 0.95),  # unreviewed: neither right nor wrong
        PredictedMatch("Q2", "R4", 0.5),  # reviewed, no copy: wrong
    ]
    assert [p.query for p in reviewed_predictions(predictions, labels)] == ["Q1", "Q2"]


def read_review_labels_from_rows(rows: list[tuple[str, str]]):
    with tempfile.TemporaryDirectory() as folder:
        text = "query_id,reference_id\n" + "".join(f"{q},{r}\n" for q, r in rows)
        return read_review_labels(labels_file(Path(folder), text))


def test_reviewed_pairs_are_the_rows_of_reviewed_queries() -> None:
    pairs = pd.DataFrame(
        {
            "query_id": ["Q1", "Q1", "Q2", "Q3"],
            "reference_id": ["R1", "R2", "R1", "R3"],
            "inliers": [30.0, 2.0, 1.0, 40.0],
        }
    )
    # Q1: R1 a copy (R2 then is not); Q2 no copy; Q3 unreviewed; Q4's copy has no row.
    labels = read_review_labels_from_rows([("Q1", "R1"), ("Q2", ""), ("Q4", "R4")])
    rows, y = reviewed_pairs(pairs, labels)
    assert list(zip(rows["query_id"], rows["reference_id"], strict=True)) == [
        ("Q1", "R1"),
        ("Q1", "R2"),
        ("Q2", "R1"),
    ]
    assert y.tolist() == [True, False, False]


# --- fitting on several labeled runs ------------------------------------------------------------


def signal_labels(pairs: pd.DataFrame) -> np.ndarray:
    signal = pairs["inliers"] + 30 * pairs["vlad_normalized"].fillna(0)
    return (signal > signal.quantile(0.7)).to_numpy()


def test_one_group_is_the_plain_fit() -> None:
    pairs = random_pairs(crop=False)
    one = fit_logistic(pairs, signal_labels(pairs))
    assert fit_logistic_groups([(pairs, signal_labels(pairs))]) == one


def test_each_group_keeps_its_own_global_background() -> None:
    """Two runs whose global similarities sit at different levels: fitted together, each is
    standardized against its own background, as rule fuse does for the run it scores."""
    first = random_pairs(seed=1, crop=False)
    second = random_pairs(seed=2, crop=False)
    for column in ("vlad_similarity", "vlad_normalized", "sscd_similarity", "sscd_normalized"):
        second[column] = second[column] + 0.3  # another collection, another chance level
    labels = np.r_[signal_labels(first), signal_labels(second)]
    model = fit_logistic_groups([(first, signal_labels(first)), (second, signal_labels(second))])
    assert (model.n_pairs, model.n_positives) == (len(first) + len(second), int(labels.sum()))
    # Pooled into one table, the second run's similarities would be read against a shared
    # background: other features, another model.
    pooled = pd.concat([first, second], ignore_index=True)
    own = pd.concat(
        [feature_table(first, RuleConstants()), feature_table(second, RuleConstants())],
        ignore_index=True,
    )
    assert not np.allclose(feature_table(pooled, RuleConstants()), own)
    assert model != fit_logistic(pooled, labels)
    with pytest.raises(ValueError, match="both positive and negative"):
        fit_logistic_groups([(first, np.zeros(len(first), bool))])


# --- the rule scripts ---------------------------------------------------------------------------


def test_evaluate_review_scores_the_reviewed_queries_only(tmp_path: Path) -> None:
    predictions = tmp_path / "predictions.csv"
    predictions.write_text(
        "query_id,reference_id,score\n"
        "Q1,R1,0.9\n"
        "Q9,R9,0.95\n"  # unreviewed: left out (a ground truth would count it as wrong)
        "Q2,R4,0.6\n"
        "Q3,R3,0.4\n"
    )
    labels = labels_file(tmp_path, "query_id,reference_id\nQ1,R1\nQ2,\nQ3,R3\n")
    out = tmp_path / "eval" / "review"
    run_script(
        "evaluate_review.py",
        SimpleNamespace(
            input=SimpleNamespace(predictions=str(predictions), review_labels=str(labels)),
            output=SimpleNamespace(
                metrics=str(out / "metrics.json"), pr_curve=str(out / "pr_curve.png")
            ),
            log=[str(tmp_path / "evaluate_review.log")],
        ),
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_queries"] == 3 and metrics["n_positives"] == 2
    assert metrics["n_predictions"] == 3
    # Ranked: Q1 right (0.9), Q2 wrong (0.6), Q3 right (0.4): AP = (1 + 2/3) / 2.
    assert metrics["micro_ap"] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["threshold_at_p90"] == 0.9 and metrics["recall_at_p90"] == 0.5
    assert (out / "pr_curve.png").stat().st_size > 1000


def run_fit(tmp_path: Path, inputs: dict) -> FusionModel:
    tmp_path.mkdir(exist_ok=True)
    model = tmp_path / "model.json"
    run_script(
        "fit_fusion.py",
        SimpleNamespace(
            input=SimpleNamespace(**inputs),
            output=SimpleNamespace(model=str(model)),
            params=SimpleNamespace(fusion={"method": "logistic", "model": ""}),
            log=[str(tmp_path / "fit.log")],
        ),
    )
    return FusionModel.from_json(model)


def review_of(pairs: pd.DataFrame, tmp_path: Path, n_queries: int) -> Path:
    """Labels of the first ``n_queries`` queries: their pairs above the signal's 70th
    percentile are copies; a query without one is a no-copy row."""
    labeled = pairs.assign(copy=signal_labels(pairs))
    queries = sorted(labeled["query_id"].unique())[:n_queries]
    rows = []
    for query in queries:
        copies = labeled.loc[(labeled["query_id"] == query) & labeled["copy"], "reference_id"]
        rows += [f"{query},{r}" for r in sorted(copies)] or [f"{query},"]
    return labels_file(tmp_path, "query_id,reference_id\n" + "\n".join(rows) + "\n")


def test_fit_fusion_learns_from_reviewed_pairs_alone_or_with_a_development_run(
    tmp_path: Path,
) -> None:
    run = random_pairs(seed=3, crop=False)
    labels = review_of(run, tmp_path, n_queries=40)  # 40 of the 80 queries, 5 pairs each
    review = {
        "review_pairs": write_tables(tmp_path, run, "run"),
        "review_crop_pairs": [],
        "review_labels": str(labels),
    }
    alone = run_fit(tmp_path / "alone", {"pairs": [], "ground_truth": [], **review})
    assert alone.n_pairs == 200  # the reviewed queries' rows only
    development = random_pairs(seed=4, crop=False)
    truth = tmp_path / "truth.csv"
    development.loc[signal_labels(development), ["query_id", "reference_id"]].to_csv(
        truth, index=False
    )
    dev = {"pairs": write_tables(tmp_path, development, "dev"), "ground_truth": str(truth)}
    both = run_fit(tmp_path / "both", {**dev, **review})
    assert both.n_pairs == len(development) + 200
    assert run_fit(tmp_path / "dev", dev).n_pairs == len(development)  # no review: as before
    with pytest.raises(ValueError, match="development run's ground truth or review labels"):
        run_fit(tmp_path / "none", {"pairs": [], "ground_truth": []})
