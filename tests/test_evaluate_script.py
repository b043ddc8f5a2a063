"""Rule evaluate's extras: the per-branch ablation table and recall by edit type."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from script_runner import run_script

from copydetect.evaluation import EDIT_RECALL_COLUMNS, edit_groups, edit_recall, read_edits
from copydetect.fusion import FusionParams, fused_predictions
from copydetect.metrics import GroundTruth, GroundTruthMatch, Metrics, PredictedMatch
from copydetect.predictions import write_predictions
from copydetect.tables import write_csv

NAN = float("nan")
EDITS = """query_id,reference_id,edits
Q1,R1,"[{""op"":""crop"",""box"":[0,0,5,5]},{""op"":""text"",""text"":""hi""}]"
Q2,R2,"[{""op"":""text"",""text"":""yo""}]"
Q3,,"[{""op"":""blur"",""radius"":2}]"
Q4,R4,[]
"""


def scored() -> pd.DataFrame:
    """Q1 and Q4 are found by the fusion; Q2 only through vlad, low; Q3 is a distractor."""
    return pd.DataFrame(
        {
            "query_id": ["Q1", "Q1", "Q2", "Q2", "Q3", "Q4"],
            "reference_id": ["R1", "R9", "R2", "R8", "R3", "R4"],
            "score": [0.95, 0.30, 0.20, 0.25, 0.40, 0.90],
            "branch_local": [0.9, 0.2, 0.1, 0.3, 0.35, 0.85],
            "branch_vlad": [NAN, 0.5, 0.6, NAN, 0.2, NAN],
            "inliers": [40, 2, 0, 3, 3, 35],
        }
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run_evaluate(tmp_path: Path, edits: bool, top_k: int = 10) -> Path:
    fusion = {"method": "rule", "model": "", "top_k_per_query": top_k, "max_predictions": 100}
    table = scored()
    write_csv(tmp_path / "scored.csv", table)
    write_predictions(
        fused_predictions(table, FusionParams.from_mapping(fusion)), tmp_path / "p.csv"
    )
    truth = write(tmp_path / "gt.csv", "query_id,reference_id\nQ1,R1\nQ2,R2\nQ3,\nQ4,R4\n")
    out = tmp_path / "eval"
    snakemake = SimpleNamespace(
        input=SimpleNamespace(
            predictions=str(tmp_path / "p.csv"),
            scored_pairs=str(tmp_path / "scored.csv"),
            ground_truth=str(truth),
            edits=[str(write(tmp_path / "edits.csv", EDITS))] if edits else [],
        ),
        output=SimpleNamespace(
            metrics=str(out / "metrics.json"),
            pr_curve=str(out / "pr.png"),
            ablation=str(out / "ablation.csv"),
            edit_recall=str(out / "edit_recall.csv"),
        ),
        params=SimpleNamespace(fusion=fusion),
        log=[str(tmp_path / "evaluate.log")],
    )
    run_script("evaluate.py", snakemake)
    return out


def test_ablation_rows_and_the_fused_row_matches_the_metrics(tmp_path: Path) -> None:
    out = run_evaluate(tmp_path, edits=True)
    metrics = json.loads((out / "metrics.json").read_text())
    ablation = pd.read_csv(out / "ablation.csv")
    assert list(ablation.columns) == [
        "branch",
        "micro_ap",
        "recall_at_p90",
        "threshold_at_p90",
        "recall_at_1",
        "n_predictions",
    ]
    assert ablation["branch"].tolist() == ["fused", "local", "vlad"]
    fused = ablation.iloc[0]
    assert fused.micro_ap == pytest.approx(metrics["micro_ap"])
    assert fused.threshold_at_p90 == pytest.approx(metrics["threshold_at_p90"])
    assert fused.recall_at_1 == pytest.approx(metrics["recall_at_rank1"])
    assert fused.n_predictions == metrics["n_predictions"] == 6
    assert ablation.set_index("branch").loc["vlad", "n_predictions"] == 3


def test_edit_recall_by_operation(tmp_path: Path) -> None:
    out = run_evaluate(tmp_path, edits=True)
    table = pd.read_csv(out / "edit_recall.csv")
    assert list(table.columns) == EDIT_RECALL_COLUMNS
    fused = table[table.branch == "fused"].set_index("edit")
    # copies: Q1 crop+text, Q2 text, Q4 no edit; Q3 (blur) is a distractor, so no blur group.
    assert fused.index.tolist() == ["all", "crop", "none", "text"]
    assert fused["copies"].tolist() == [3, 1, 1, 2]
    # Q1 and Q4 rank first; Q2's true reference is second (0.20 < 0.25).
    assert fused.loc["all", "recall_at_1"] == pytest.approx(2 / 3)
    assert fused.loc["text", "recall_at_1"] == pytest.approx(0.5)
    # P90 threshold 0.90 (Q1 at 0.95, Q4 at 0.90, then the distractor's 0.40)
    assert fused.loc["all", "recall_at_p90"] == pytest.approx(2 / 3)
    assert fused.loc["none", "recall_at_p90"] == 1.0
    vlad = table[table.branch == "vlad"].set_index("edit")
    assert vlad.loc["text", "recall_at_1"] == 0.5  # Q2 via vlad, Q1's pair never scored by it
    assert set(table.branch) == {"fused", "local", "vlad"}


def test_without_an_edit_log_only_the_all_rows(tmp_path: Path) -> None:
    out = run_evaluate(tmp_path, edits=False, top_k=1)
    table = pd.read_csv(out / "edit_recall.csv")
    assert table["edit"].unique().tolist() == ["all"]
    assert table["branch"].tolist() == ["fused", "local", "vlad"]
    assert (table["copies"] == 3).all()
    ablation = pd.read_csv(out / "ablation.csv")
    assert (ablation["n_predictions"] <= 4).all()  # one per query, as in predictions.csv


def test_read_edits_and_its_errors(tmp_path: Path) -> None:
    edits = read_edits(write(tmp_path / "edits.csv", EDITS))
    assert edits == {"Q1": ("crop", "text"), "Q2": ("text",), "Q3": ("blur",), "Q4": ()}
    bad = write(tmp_path / "bad.csv", 'query_id,reference_id,edits\nQ1,R1,"[{""x"":1}]"\n')
    with pytest.raises(ValueError, match="bad.csv:2"):
        read_edits(bad)
    with pytest.raises(ValueError, match="header"):
        read_edits(write(tmp_path / "head.csv", "query,edits\n"))


def test_edit_groups_ignore_copies_the_log_lacks() -> None:
    matches = [GroundTruthMatch("Q1", "R1"), GroundTruthMatch("Q5", "R5")]
    groups = edit_groups(matches, {"Q1": ("crop",)})
    assert {k: v.tolist() for k, v in groups.items()} == {
        "all": [True, True],
        "crop": [True, False],
    }


def test_edit_recall_counts_ties_pessimistically() -> None:
    truth = GroundTruth([GroundTruthMatch("Q1", "R1")], frozenset({"Q1"}))
    tied = [PredictedMatch("Q1", "R0", 0.5), PredictedMatch("Q1", "R1", 0.5)]
    metrics = Metrics(0.5, 0.0, None, 0.0, 1.0, 2, 1, 1)
    table = edit_recall(truth, {"fused": tied}, {"fused": metrics})
    assert table.to_dict("records") == [
        {"edit": "all", "branch": "fused", "copies": 1, "recall_at_1": 0.0, "recall_at_p90": 0.0}
    ]
    assert np.isfinite(table["recall_at_1"]).all()
