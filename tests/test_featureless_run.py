"""A workflow run with featureless and near-blank queries and references (issue 15's must-show):
none of those queries may score at or above the P90 threshold the evaluation computes, and
no global model may give them a vector (featureless pairs would otherwise match at 1.0)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from featureless_images import featureless_images
from PIL import Image
from workflow_helpers import snakemake, write_tiny_sets

from copydetect.shards import read_embedding_shard

FEATURELESS_REFERENCES = ("flat_grey", "ramp_blue", "vignette", "near_blank")
GLOBAL_MODELS = ["vlad", "layout"]  # both weights-free models, whichever is on by default


@pytest.fixture(scope="module")
def featureless_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Photo tiles with 4 copies and a distractor (tests/workflow_helpers.py), plus featureless
    references and eight featureless queries (other sizes and noise: none is a copy)."""
    root = tmp_path_factory.mktemp("featureless")
    config = write_tiny_sets(root / "data")
    data = root / "data"
    for name in FEATURELESS_REFERENCES:
        image = featureless_images(seed=1)[name]
        Image.fromarray(image).save(data / "references" / f"R8{name}.jpg", quality=90)
    queries = []
    for name, image in featureless_images(shape=(200, 280), seed=2).items():
        Image.fromarray(image).save(data / "queries" / f"Q8{name}.jpg", quality=80)
        queries.append(f"Q8{name}")
    with open(data / "ground_truth.csv", "a") as truth:
        truth.writelines(f"{query},\n" for query in queries)
    config["global"] = {"models": GLOBAL_MODELS}
    result = snakemake(root / "run", config)
    assert result.returncode == 0, result.stdout[-5000:]
    return root / "run" / "results", queries


def test_no_featureless_query_reaches_the_p90_threshold(
    featureless_run: tuple[Path, list[str]],
) -> None:
    """Not at the P90 threshold, nor at 0.5 (fused evidence at the prior): with the floors off
    (layout min_detail 0, VLAD min_descriptors 0) the vignette query scored 0.64 against the
    vignette reference in this run (measured; the threshold was 0.95 there)."""
    results, queries = featureless_run
    metrics = json.loads((results / "eval" / "metrics.json").read_text())
    threshold = metrics["threshold_at_p90"]
    assert threshold is not None and metrics["recall_at_p90"] >= 0.75  # the copies are found
    scores: dict[str, float] = {}
    for line in (results / "predictions.csv").read_text().splitlines()[1:]:
        query, _, score = line.split(",")
        scores[query] = max(scores.get(query, 0.0), float(score))
    strong = {q: scores[q] for q in queries if scores.get(q, 0.0) >= min(threshold, 0.5)}
    assert strong == {}, f"P90 threshold {threshold}"


def test_featureless_pairs_carry_no_global_similarity(
    featureless_run: tuple[Path, list[str]],
) -> None:
    results, queries = featureless_run
    pairs = pd.read_csv(results / "fuse" / "scored_pairs.csv", dtype={"reference_id": str})
    featureless = pairs[pairs["query_id"].isin(queries)]
    for model in GLOBAL_MODELS:
        assert featureless[f"{model}_similarity"].isna().all(), model
        assert pairs[f"{model}_similarity"].notna().any(), model  # the column is filled


@pytest.mark.parametrize("model", GLOBAL_MODELS)
def test_featureless_images_carry_no_global_vector(
    featureless_run: tuple[Path, list[str]], model: str
) -> None:
    results, queries = featureless_run
    featureless = set(queries) | {f"R8{name}" for name in FEATURELESS_REFERENCES}
    seen = 0
    # The image sets only: a small crop of a textured query (overlay.detector) may hold too few
    # descriptors for a VLAD vector, and that is not what this test is about.
    sets = ("queries", "references", "training")
    for path in sorted(p for s in sets for p in (results / "projected" / model / s).glob("*.h5")):
        shard = read_embedding_shard(path)
        for image_id, vector in zip(shard.ids, shard.vectors, strict=True):
            assert (image_id in featureless) != bool(np.any(vector)), (model, image_id)
            seen += image_id in featureless
    assert seen == len(featureless)
