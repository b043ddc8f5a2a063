"""The labeled development run the logistic fusion is fitted on (copydetect.development)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from workflow_helpers import photo_tiles

from copydetect.development import (
    DevelopmentParams,
    development_params,
    make_development_set,
    synthesis_config,
)


def test_sizes_shrink_to_the_training_images_available() -> None:
    params = DevelopmentParams(references=300, copy_queries=300, distractors=100)
    full = synthesis_config(1000, params)
    assert (full.n_references, full.n_copy_queries, full.n_distractors) == (300, 300, 100)
    small = synthesis_config(40, params)
    assert small.n_references + small.n_distractors <= 40
    assert small.n_references == 30 and small.n_distractors == 10
    with pytest.raises(ValueError, match="at least 4"):
        synthesis_config(3, params)


def test_params_come_from_the_fusion_section() -> None:
    section = {"run": "", "ground_truth": "", "references": 5, "seed": 2}
    assert development_params(section) == DevelopmentParams(references=5, seed=2)
    with pytest.raises(ValueError, match="unknown fusion.development"):
        development_params({"referenses": 5})


def test_development_set_is_made_from_the_training_images(tmp_path: Path) -> None:
    training = tmp_path / "training"
    training.mkdir()
    for i, tile in enumerate(photo_tiles(10)):
        tile.save(training / f"T{i:03d}.jpg")
    params = DevelopmentParams(references=6, copy_queries=5, distractors=2)
    make_development_set(training, tmp_path / "dev", params)
    with open(tmp_path / "dev" / "ground_truth.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and sum(1 for r in rows if r["reference_id"]) == 5
    assert len(list((tmp_path / "dev" / "references").iterdir())) == 6
