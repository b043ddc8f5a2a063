"""Per-edit and per-source tables of benchmarks/breakdown.py on a hand-made run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import breakdown  # noqa: E402


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def run(tmp_path: Path) -> breakdown.RunData:
    bench, run_dir = tmp_path / "bench2", tmp_path / "run"
    _write(bench / "ground_truth.csv", "query_id,reference_id\nQ0,R0\nQ1,R1\nQ2,\n")
    chains = {"Q0": [{"op": "pixelize"}], "Q1": [{"op": "pixelize"}, {"op": "vflip"}], "Q2": []}
    _write(
        bench / "edits.csv",
        "query_id,reference_id,edits\n"
        + "".join(f"{q},{r},\"{json.dumps(c).replace(chr(34), chr(34) * 2)}\"\n"
                  for (q, c), r in zip(chains.items(), ["R0", "R1", ""], strict=True)),
    )  # fmt: skip
    _write(
        bench / "sources.csv",
        "id,role,source\nR0,reference,text__page0001.png\nR1,reference,oxygen__apps_x.png\n"
        "Q2,distractor,text__page0002.png\n",
    )
    _write(bench / "build.json", json.dumps({"kinds": {"text": "text page", "oxygen": "icon"}}))
    # Q0 right at 0.9; Q1 ranks a wrong reference first; the distractor scores 0.5.
    _write(
        run_dir / "results" / "predictions.csv",
        "query_id,reference_id,score\nQ0,R0,0.9\nQ1,R0,0.8\nQ1,R1,0.3\nQ2,R1,0.5\n",
    )
    metrics = {"micro_ap": 0.5, "recall_at_p90": 0.5, "threshold_at_p90": 0.9}
    metrics |= {"recall_at_rank1": 0.5, "recall_at_rank10": 1.0}
    _write(run_dir / "results" / "eval" / "metrics.json", json.dumps(metrics))
    return breakdown.load_run(bench, run_dir)


def test_edit_rows_count_each_op_of_a_chain(run: breakdown.RunData) -> None:
    rows = {r.group: r for r in breakdown.breakdown(run, "edit")}
    assert (rows["pixelize"].copies, rows["pixelize"].top1) == (2, 0.5)
    assert (rows["vflip"].copies, rows["vflip"].top1, rows["vflip"].found_at_p90) == (1, 0.0, 0.0)
    # vflip's copy: its pair (0.3) ranks below a wrong one (0.8) and the distractor (0.5).
    assert rows["vflip"].micro_ap == pytest.approx(1 / 3)
    assert rows["all copies"].copies == 2


def test_source_rows_use_the_kinds_of_build_json(run: breakdown.RunData) -> None:
    rows = {r.group: r for r in breakdown.breakdown(run, "source")}
    assert rows["text page"].top1 == 1.0 and rows["text page"].micro_ap == 1.0
    assert rows["icon"].top1 == 0.0
    assert breakdown.distractor_rows(run) == [("text page", 1, 0)]


def test_section_names_both_tables(run: breakdown.RunData) -> None:
    text = breakdown.render([run], ["--pair", "b", "r"])
    assert text.startswith(breakdown.HEADING)
    assert "| pixelize | 2 | 0.50 |" in text and "| icon | 1 | 0.00 |" in text
