"""The ``layout`` descriptor alone on the wallpaper/Tux Paint benchmark, for its design choices.

Computes the descriptor of every benchmark image file (longest side 320 px, as ingest), fits
the workflow's PCA-whitening on the training images, ranks each query's top 10 references by
score-normalized cosine (as global search) and prints micro-AP, recall@P90 and recall@1 per
variant. Seconds per run on 2 cores; it writes nothing into the benchmark.

    .venv/bin/python benchmarks/layout_sweep.py [--bench benchmarks/work/bench]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from copydetect.layout import LayoutParams, layout_vector
from copydetect.metrics import PredictedMatch, evaluate, read_ground_truth
from copydetect.normalization import NormalizationParams, fit_normalization
from copydetect.shards import write_embedding_shard

MAX_SIDE = 320
TOP_K = 10
BANK_NEIGHBORS = 10
Images = dict[str, np.ndarray]


def read_set(folder: Path) -> Images:
    """RGB images of a folder by file stem, longest side at most MAX_SIDE."""
    images = {}
    for path in sorted(folder.iterdir()):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        scale = MAX_SIDE / max(bgr.shape[:2])
        if scale < 1:
            bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        images[path.stem] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return images


def predictions(
    sets: dict[str, Images], embed: Callable[[np.ndarray], np.ndarray], pca_dim: int | None
) -> list[PredictedMatch]:
    """Top-k references per searched query by similarity − mean top-10 bank similarity."""
    vectors = {name: np.stack([embed(im) for im in imgs.values()]) for name, imgs in sets.items()}
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "training.h5"
        write_embedding_shard(shard, list(sets["training"]), vectors["training"])
        norm = fit_normalization([shard], NormalizationParams(pca_dim=pca_dim))
    queries, references = norm.apply(vectors["queries"]), norm.apply(vectors["references"])
    bank = np.sort(queries @ norm.bank.T, axis=1)[:, -BANK_NEIGHBORS:].mean(axis=1)
    scores = queries @ references.T - bank[:, None]
    reference_ids = list(sets["references"])
    found = []
    for row, query_id in enumerate(sets["queries"]):
        if queries[row].any():  # featureless queries are not searched
            for col in np.argsort(-scores[row], kind="stable")[:TOP_K]:
                found.append(PredictedMatch(query_id, reference_ids[col], float(scores[row, col])))
    return found


VARIANTS: Sequence[tuple[str, dict, int | None]] = (
    ("default (grids 4/8/16, chroma 0.25)", {}, 256),
    ("grids 4/8", {"grids": (4, 8), "grid_weights": (1.0, 1.0)}, 256),
    ("grids 8/16", {"grids": (8, 16), "grid_weights": (1.0, 1.0)}, 256),
    ("grids 4/8/16/32", {"grids": (4, 8, 16, 32), "grid_weights": (1.0,) * 4}, 256),
    ("chroma 0", {"chroma_weight": 0.0}, 256),
    ("chroma 0.5", {"chroma_weight": 0.5}, 256),
    ("chroma 1", {"chroma_weight": 1.0}, 256),
    ("no featureless floor (min_detail 0)", {"min_detail": 0.0}, 256),
    ("no PCA (L2 only)", {}, None),
)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, default=Path("benchmarks/work/bench"))
    args = parser.parse_args(argv)
    sets = {name: read_set(args.bench / name) for name in ("queries", "references", "training")}
    truth = read_ground_truth(args.bench / "ground_truth.csv")
    print("| variant | micro-AP | recall@P90 | recall@1 | queries without vector |")
    print("|---|---:|---:|---:|---:|")
    for label, settings, pca_dim in VARIANTS:
        params = LayoutParams(**settings)
        found = predictions(sets, lambda im, p=params: layout_vector(im, p), pca_dim)
        m = evaluate(truth.matches, found, truth.query_ids)
        empty = len(sets["queries"]) - len({f.query for f in found})
        print(
            f"| {label} | {m.micro_ap:.4f} | {m.recall_at_p90:.4f} | {m.recall_at_rank1:.4f} "
            f"| {empty} |"
        )


if __name__ == "__main__":
    main()
