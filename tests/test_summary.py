"""The run summary printed at the end of make demo."""

from __future__ import annotations

import json
from pathlib import Path

from copydetect.shards import write_image_shard
from copydetect.summary import format_run_summary, summarize_shards


def test_summary_names_metrics_branches_and_gallery(tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "report").mkdir()
    (tmp_path / "predictions.csv").write_text("query_id,reference_id,score\nQ1,R1,0.9\n")
    metrics = {"micro_ap": 0.5, "recall_at_p90": 0.25, "threshold_at_p90": None}
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({**metrics, "recall_at_rank1": 1}))
    (tmp_path / "eval" / "ablation.csv").write_text(
        "branch,micro_ap,recall_at_p90,threshold_at_p90,recall_at_1,n_predictions\n"
        "fused,0.5,0.25,,1.0,1\nlocal,0.125,0.0,,1.0,1\n"
    )
    (tmp_path / "report" / "gallery.html").write_text("<html></html>")
    lines = format_run_summary(tmp_path).splitlines()
    assert lines[0] == f"predictions: 1 rows in {tmp_path / 'predictions.csv'}"
    assert "micro-AP 0.5000, recall@P90 0.2500 (score threshold None)" in lines[1]
    assert "micro-AP fused 0.5000, local 0.1250" in lines[2]
    assert str(tmp_path / "report" / "gallery.html") in lines[3]


def test_summary_of_an_empty_folder_is_empty(tmp_path: Path) -> None:
    assert format_run_summary(tmp_path) == ""


def test_listing_rejects_join_the_shards_rejects(tmp_path: Path) -> None:
    shard = tmp_path / "s0000.h5"
    write_image_shard(shard, [])
    table = tmp_path / "s0000.rejects.csv"
    table.write_text("id,path,reason\nR1,/x/R1.jpg,empty_file: file has 0 bytes\n")
    listed = [["notes", "/x/notes.txt", "unsupported_format: .txt files are not listed"]]
    summary = summarize_shards([shard], [table], tmp_path / "rejects.csv", listed)
    assert summary.n_rejected == 2
    assert summary.reasons == {"empty_file": 1, "unsupported_format": 1}
    rows = (tmp_path / "rejects.csv").read_text().splitlines()
    assert rows[1].startswith("notes,/x/notes.txt") and rows[2].startswith("R1,")
