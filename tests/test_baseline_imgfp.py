"""The imgFp-style baseline (benchmarks/baseline_imgfp.py) on tiny synthetic images."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import baseline_imgfp as bl  # noqa: E402
from image_helpers import edited_copy  # noqa: E402


def shapes(seed: int, size: tuple[int, int] = (200, 260)) -> np.ndarray:
    """A grayscale random texture (noise at a few scales, smoothed): many distinct keypoints
    whose descriptors change under a left-right flip, unlike those of simple shapes."""
    rng = np.random.default_rng(seed)
    image = np.zeros(size, np.float32)
    for cell in (48, 16, 6):
        coarse = rng.random((size[0] // cell + 1, size[1] // cell + 1)).astype(np.float32)
        image += cv2.resize(coarse, size[::-1], interpolation=cv2.INTER_CUBIC)
    image = cv2.GaussianBlur(image, (0, 0), 1.5)
    return cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def features(gray: np.ndarray) -> tuple[bl.Features, bl.Features]:
    """Features of an image and of its mirror, as the baseline computes them from a file."""
    sift = cv2.SIFT_create()
    gray = bl.resize_short_side(gray)
    return bl.sift_features(gray, sift), bl.sift_features(cv2.flip(gray, 1), sift)


@pytest.fixture(scope="module")
def collection() -> tuple[dict[str, bl.Features], bl.ReferenceIndex]:
    references = {f"R{i}": features(shapes(i))[0] for i in range(4)}
    return references, bl.build_index(references)


def test_resize_short_side_never_upscales() -> None:
    assert bl.resize_short_side(np.zeros((600, 900), np.uint8)).shape == (300, 450)
    assert bl.resize_short_side(np.zeros((200, 100), np.uint8)).shape == (200, 100)


def test_root_sift_has_unit_norm() -> None:
    d = np.random.default_rng(0).integers(0, 255, (5, 128)).astype(np.float32)
    assert np.allclose(np.linalg.norm(bl.root_sift(d), axis=1), 1.0, atol=1e-5)


def test_edited_copy_is_found_and_scored_highest(collection) -> None:
    references, index = collection
    copy = edited_copy(np.dstack([shapes(2)] * 3))[..., 0]
    views = features(copy)
    assert bl.shortlist(bl.vote(index, views))[0] == "R2"
    predictions = {p.reference: p.score for p in bl.score_query("Q", views, index, references)}
    assert max(predictions, key=predictions.get) == "R2"
    assert predictions["R2"] >= 20
    others = [s for r, s in predictions.items() if r != "R2"]
    assert max(others, default=0) < predictions["R2"] / 4


def test_distractor_scores_low(collection) -> None:
    references, index = collection
    views = features(shapes(99))
    predictions = bl.score_query("Q", views, index, references)
    assert max((p.score for p in predictions), default=0) < 10


def test_mirrored_copy_is_found_through_the_mirror_view(collection) -> None:
    references, index = collection
    plain, mirror = features(cv2.flip(shapes(1), 1))
    # The flipped copy hardly verifies against its reference as it is (a few chance inliers: any
    # 4 matches fit a homography), its mirror view (the original orientation) does ...
    assert bl.inliers(mirror, references["R1"]) >= 10 * max(bl.inliers(plain, references["R1"]), 2)
    # ... and scoring takes the best view.
    best = max(bl.score_query("Q", (plain, mirror), index, references), key=lambda p: p.score)
    assert best.reference == "R1"
    plain_only = {p.reference: p.score for p in bl.score_query("Q", (plain,), index, references)}
    assert plain_only.get("R1", 0) * 10 <= best.score


def test_featureless_image_gives_no_votes_and_no_predictions(collection) -> None:
    references, index = collection
    views = features(np.full((300, 300), 200, np.uint8))
    assert not bl.vote(index, views)
    assert bl.score_query("Q", views, index, references) == []


def test_run_baseline_writes_predictions_scored_by_the_workflow_metrics(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    (bench / "references").mkdir(parents=True)
    (bench / "queries").mkdir()
    for i in range(3):
        cv2.imwrite(str(bench / "references" / f"R{i}.png"), shapes(i))
    cv2.imwrite(str(bench / "queries" / "Q0.png"), cv2.flip(shapes(0), 1))  # a mirrored copy
    cv2.imwrite(str(bench / "queries" / "Q1.png"), shapes(50))  # a distractor
    (bench / "ground_truth.csv").write_text("query_id,reference_id\nQ0,R0\nQ1,\n")
    out = tmp_path / "predictions.csv"
    bl.write_predictions(bl.run_baseline(bench), out)
    rows = list(csv.DictReader(out.open()))
    assert {"query_id", "reference_id", "score"} <= set(rows[0])
    metrics = bl.evaluate(out, bench / "ground_truth.csv")
    assert metrics["micro_ap"] == pytest.approx(1.0)
    assert metrics["recall_at_rank1"] == 1.0


def test_cpu_seconds_count_children() -> None:
    import subprocess

    before = bl.cpu_seconds()
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(1_000_000))"], check=True)
    assert bl.cpu_seconds() - before > 0.02


def write_job_log(path: Path, cpu: tuple[float, float] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["2026-11-29 01:00:00,000 INFO root: working"]
    if cpu is not None:
        lines.append(
            "2026-11-29 01:00:09,000 INFO root: job CPU seconds: "
            f"{cpu[0]:.3f} user, {cpu[1]:.3f} system, peak RSS 100.0 MiB"
        )
    path.write_text("\n".join(lines) + "\n")


def test_step_cpu_sums_the_job_logs_per_folder(tmp_path: Path) -> None:
    logs = tmp_path / "results" / "logs"
    write_job_log(logs / "sift" / "references" / "s0000.log", (10.0, 1.0))
    write_job_log(logs / "sift" / "queries" / "s0000.log", (5.0, 0.5))
    write_job_log(logs / "verify" / "queries" / "s0000.log", (20.0, 2.0))
    write_job_log(logs / "fuse.log", (1.0, 0.25))
    write_job_log(logs / "evaluate.log", None)  # failed before its last line: left out
    steps = bl.step_cpu(tmp_path / "results")
    assert steps == [
        bl.StepCpu("verify", 1, 22.0),
        bl.StepCpu("sift", 2, 16.5),
        bl.StepCpu("fuse", 1, 1.25),
    ]
    assert bl.step_cpu(tmp_path / "missing") == []


def test_the_section_shows_where_the_workflow_cpu_went() -> None:
    cpu = {"cpu_s": 100.0, "wall_s": 60.0}
    metrics = {"micro_ap": 0.7, "recall_at_p90": 0.6, "recall_at_rank1": 0.7, "n_predictions": 9}
    record = {
        "date": "d",
        "machine": "m",
        "commit": "c",
        "cores": 2,
        "n_queries": 50,
        "n_references": 40,
        "workflow_cpu": cpu,
        "baseline_cpu": {"cpu_s": 1000.0, "wall_s": 900.0},
        "workflow_metrics": metrics,
        "baseline_metrics": metrics,
        "workflow_steps": [{"step": "verify", "jobs": 1, "cpu_s": 60.0}],
        "command": "cmd",
        "workflow_command": "wf",
    }
    section = bl.render(record)
    assert "| verify | 1 | 60.0 | 60% | 1.200 |" in section
    assert "| Snakemake itself and outside jobs |  | 40.0 | 40% | 0.800 |" in section
    assert "| **total** | 1 | 100.0 | 100% | 2.000 |" in section
    assert "workflow / baseline: **0.100**" in section
    del record["workflow_steps"]  # a record written before the step table
    assert "| step |" not in bl.render(record)
