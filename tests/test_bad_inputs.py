"""The bad-input corpus (tests/bad_inputs.py) through the real workflow: no crash, every file
ingested or in the rejects table with the expected reason, the copies still found."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import INGESTED, corpus_path, write_corpus
from PIL import Image
from workflow_helpers import best_per_query, snakemake, write_tiny_sets

from copydetect.inputs import printable_path
from copydetect.shards import read_shard_ids


def all_paths(folder: Path) -> list[str]:
    """Every file and link under ``folder`` (folders themselves excluded), as listing sees it."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        found += [os.path.join(dirpath, name) for name in filenames]
        found += [
            os.path.join(dirpath, d) for d in dirnames if os.path.islink(os.path.join(dirpath, d))
        ]
    return sorted(printable_path(p) for p in found)


def write_featureless(data: Path) -> list[str]:
    """Blank, one-colour and smooth-gradient queries and references (distractors in the ground
    truth): images without keypoints, whose VLAD vectors used to be all alike."""
    ramp = np.linspace(0, 255, 240, dtype=np.float32)
    images = {
        "queries/QBLANK.png": np.full((200, 240, 3), 255, np.uint8),
        "queries/QFLAT.png": np.full((200, 240, 3), (40, 90, 160), np.uint8),
        "queries/QGRADIENT.png": np.stack([np.tile(ramp, (200, 1))] * 3, -1).astype(np.uint8),
        "references/RFLAT.png": np.full((220, 220, 3), (200, 60, 60), np.uint8),
        "references/RGRADIENT.png": np.stack(
            [np.tile(ramp[:220, None], (1, 220)), np.full((220, 220), 128.0), np.zeros((220, 220))],
            -1,
        ).astype(np.uint8),
    }
    for name, pixels in images.items():
        Image.fromarray(pixels).save(data / name)
    queries = [Path(n).stem for n in images if n.startswith("queries/")]
    with open(data / "ground_truth.csv", "a") as gt:
        gt.writelines(f"{q},\n" for q in queries)
    return queries


def test_the_corpus_has_more_than_forty_kinds(tmp_path: Path) -> None:
    kinds = write_corpus(tmp_path / "corpus")
    assert len(kinds) >= 40
    assert len({k.description for k in kinds}) == len(kinds)
    assert {k.outcome for k in kinds} > {INGESTED, "too_small", "non_utf8_name", "unreadable"}


@pytest.mark.workflow
@pytest.mark.slow
def test_bad_inputs_are_accounted_for_and_the_copies_still_match(tmp_path: Path) -> None:
    config = {
        **write_tiny_sets(tmp_path / "data"),
        "sharding": {"references": {"shard_size": 16}},
    }
    corpus = tmp_path / "data" / "references" / "corpus"
    kinds = write_corpus(corpus)
    featureless = write_featureless(tmp_path / "data")
    result = snakemake(tmp_path / "run", config)
    assert result.returncode == 0, result.stdout[-5000:]
    assert "Traceback" not in result.stdout
    images = tmp_path / "run" / "results" / "images" / "references"
    ingested = {i for shard in images.glob("s*.h5") for i in read_shard_ids(shard)}
    with open(images / "rejects.csv", newline="", encoding="utf-8") as f:
        rejects = {row["path"]: row["reason"].split(":")[0] for row in csv.DictReader(f)}

    for kind in kinds:
        path = printable_path(str(corpus_path(corpus, kind)))
        stem = os.path.splitext(os.path.basename(path))[0]
        outcome = INGESTED if stem in ingested else rejects.get(path, "vanished")
        assert outcome == kind.outcome, kind.description
    for path in all_paths(corpus):  # links and files the kinds made on the side, too
        stem = os.path.splitext(os.path.basename(path))[0]
        assert stem in ingested or path in rejects, path
    assert not (tmp_path / "run" / "PWNED").exists() and not Path("PWNED").exists()

    predictions = tmp_path / "run" / "results" / "predictions.csv"
    best = best_per_query(predictions)
    with open(predictions, newline="") as f:
        rows = list(csv.DictReader(f))
    for i in range(4):
        assert best[f"Q{i:05d}"][0] == f"R{i:06d}"
    # Featureless queries (blank, one colour, smooth gradients) match nothing, not even the
    # featureless references: no score reaches that of any true copy or the P90 threshold.
    metrics = json.loads((tmp_path / "run" / "results" / "eval" / "metrics.json").read_text())
    floor = min(best[f"Q{i:05d}"][1] for i in range(4))
    threshold = metrics["threshold_at_p90"]
    for query in featureless:
        scores = [float(r["score"]) for r in rows if r["query_id"] == query]
        assert all(x < floor and (threshold is None or x < threshold) for x in scores), query
