"""VLAD over RootSIFT: the weights-free global descriptor (Jégou et al. 2010, Arandjelović &
Zisserman 2013 "All about VLAD").

A k-means codebook of ``codebook_size`` centroids is fitted on a seeded sample of training
descriptors. An image is then described by, for each centroid, the sum of the residuals
(descriptor − centroid) of the descriptors assigned to it, followed by

1. intra-normalization: each centroid's block is L2-normalized on its own, so a burst of
   near-identical descriptors (repeated texture, text) cannot dominate the vector;
2. signed power normalization ``sign(x)·|x|^power``: further damps large components;
3. a global L2 normalization, so the inner product of two descriptors is their cosine.

Descriptors live in the "unit" space ``uint8 / 255``: uint8 RootSIFT scaled back to (almost) unit
L2 norm. Codebooks are stored in that space.

Determinism: k-means and nearest-centroid assignment run on one faiss thread, so the results do
not depend on the number of cores. BLAS may still pick other kernels on another CPU family, so
bit-identical codebooks are promised for the same machine type, not across CPU families.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict

import faiss
import h5py
import numpy as np

from copydetect.atomic import atomic_path
from copydetect.params import config_params
from copydetect.progress import Progress
from copydetect.shards import read_sift_shard, sift_descriptor_count, write_embedding_shard
from copydetect.threads import single_thread

logger = logging.getLogger(__name__)

DESCRIPTOR_DIM = 128
# uint8 RootSIFT holds round(255 · sqrt(l1-normalized SIFT)): dividing restores unit norm.
DESCRIPTOR_SCALE = 255.0


@config_params("models.vlad", schema="/$defs/vlad_model", read_elsewhere=("backend",))
class VladParams:
    """Parameters of a VLAD model (an entry of ``models`` with backend vlad; the keys it leaves
    out take the values of config/config.yaml's ``models.vlad``)."""

    codebook_size: int
    max_training_descriptors: int
    iterations: int
    power: float  # exponent of the signed power normalization; 1.0 turns it off
    seed: int
    min_descriptors: int  # fewer descriptors than this: the zero vector (no evidence)

    @property
    def dim(self) -> int:
        """Width of the VLAD vector."""
        return self.codebook_size * DESCRIPTOR_DIM


def single_faiss_thread() -> contextlib.AbstractContextManager[None]:
    """faiss on one OpenMP thread inside the block: k-means then does not depend on the core
    count, and shard jobs are the parallelism anyway."""
    return single_thread(faiss.omp_get_max_threads, faiss.omp_set_num_threads)


def to_unit(descriptors: np.ndarray) -> np.ndarray:
    """uint8 RootSIFT [n, 128] → float32 in the unit space of the codebook."""
    desc = np.asarray(descriptors).reshape(-1, DESCRIPTOR_DIM)
    return desc.astype(np.float32) / np.float32(DESCRIPTOR_SCALE)


# --- training sample ---------------------------------------------------------------------------


def descriptor_count(sift_shard_path: str | os.PathLike) -> int:
    """Number of descriptors of a SIFT shard, read from its header only."""
    return sift_descriptor_count(sift_shard_path)


def allocate_quota(counts: Sequence[int], budget: int) -> np.ndarray:
    """Split ``budget`` over shards proportionally to ``counts`` (largest remainder method).

    Quotas sum to ``min(budget, sum(counts))`` and never exceed a shard's count; remainders are
    handed out by size, ties to the earlier shard, so the split is deterministic.
    """
    counts_arr = np.asarray(counts, dtype=np.int64)
    total = int(counts_arr.sum())
    if total <= budget:
        return counts_arr.copy()
    exact = counts_arr * (budget / total)
    quota = np.floor(exact).astype(np.int64)
    missing = budget - int(quota.sum())
    order = np.lexsort((np.arange(len(counts_arr)), -(exact - quota)))
    quota[order[:missing]] += 1
    return np.minimum(quota, counts_arr)


def sample_descriptors(
    sift_shard_paths: Sequence[str | os.PathLike], max_descriptors: int, seed: int
) -> np.ndarray:
    """A seeded uniform sample of at most ``max_descriptors`` descriptors over all shards.

    Each shard contributes in proportion to its descriptor count, and only one shard's
    descriptors are in memory at a time (plus the sample). Shards are visited in sorted path
    order, so the sample does not depend on how the caller listed them.

    Returns float32 [n, 128] in the unit space (see :func:`to_unit`).
    """
    paths = sorted(sift_shard_paths, key=os.fspath)
    quota = allocate_quota([descriptor_count(p) for p in paths], max_descriptors)
    rng = np.random.default_rng(seed)
    sample = np.empty((int(quota.sum()), DESCRIPTOR_DIM), dtype=np.float32)
    start = 0
    for path, take in zip(paths, quota, strict=True):
        if take == 0:
            continue
        descriptors = np.concatenate(
            [x.descriptors for x in read_sift_shard(path)] or [np.zeros((0, DESCRIPTOR_DIM))]
        )
        rows = np.sort(rng.choice(len(descriptors), size=int(take), replace=False))
        sample[start : start + take] = to_unit(descriptors[rows])
        start += int(take)
    return sample


# --- codebook ----------------------------------------------------------------------------------


def fit_codebook(descriptors: np.ndarray, params: VladParams) -> np.ndarray:
    """k-means centroids float32 [codebook_size, 128] of unit-space descriptors.

    faiss would otherwise subsample to 256 points per centroid with its own draw: the sample is
    already bounded by ``max_training_descriptors``, so every point is used.
    """
    x = np.ascontiguousarray(descriptors, dtype=np.float32).reshape(-1, DESCRIPTOR_DIM)
    k = params.codebook_size
    if len(x) < k:
        raise ValueError(f"{len(x)} training descriptors for a codebook of {k} centroids")
    kmeans = faiss.Kmeans(
        DESCRIPTOR_DIM,
        k,
        niter=params.iterations,
        seed=params.seed,
        max_points_per_centroid=math.ceil(len(x) / k),
        verbose=False,
    )
    with single_faiss_thread():
        kmeans.train(x)
    return np.asarray(kmeans.centroids, dtype=np.float32).reshape(k, DESCRIPTOR_DIM)


def write_codebook(
    path: str | os.PathLike, centroids: np.ndarray, params: VladParams, n_training: int
) -> None:
    """Write a codebook atomically: ``centroids`` plus the parameters and sample size as attrs."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("centroids", data=np.asarray(centroids, dtype=np.float32))
        for key, value in asdict(params).items():
            f.attrs[key] = value
        f.attrs["n_training_descriptors"] = n_training
        f.attrs["descriptor_scale"] = DESCRIPTOR_SCALE


def read_codebook(path: str | os.PathLike) -> np.ndarray:
    """Centroids float32 [K, 128] of a codebook file (unit space)."""
    with h5py.File(path, "r") as f:
        return f["centroids"][:].astype(np.float32)


# --- encoding ----------------------------------------------------------------------------------


def centroid_index(centroids: np.ndarray) -> faiss.IndexFlatL2:
    """An exact L2 index over the centroids, for nearest-centroid assignment."""
    index = faiss.IndexFlatL2(DESCRIPTOR_DIM)
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return index


def aggregate_residuals(x: np.ndarray, assignment: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Per-centroid sums of residuals ``x − c(x)``, float32 [K, 128]."""
    sums = np.zeros_like(centroids, dtype=np.float32)
    np.add.at(sums, assignment, x - centroids[assignment])  # sequential: order-stable sums
    return sums


def normalize_vlad(residuals: np.ndarray, power: float) -> np.ndarray:
    """Intra-normalize, signed-power-normalize and L2-normalize [K, 128] into [K·128].

    Empty centroids stay zero (guarded divisions); an all-zero input gives the zero vector.
    """
    norms = np.linalg.norm(residuals, axis=1, keepdims=True)
    v = residuals / np.maximum(norms, np.finfo(np.float32).tiny)
    if power != 1.0:
        v = np.sign(v) * np.abs(v) ** power
    v = v.reshape(-1)
    total = float(np.linalg.norm(v))
    return (v / total if total > 0 else v).astype(np.float32)


def vlad_encode(
    descriptors: np.ndarray,
    centroids: np.ndarray,
    power: float = 0.5,
    index: faiss.IndexFlatL2 | None = None,
    min_descriptors: int = 1,
) -> np.ndarray:
    """VLAD vector float32 [K·128] of one image's uint8 RootSIFT descriptors [n, 128].

    Hard assignment to the nearest centroid. An image with fewer than ``min_descriptors``
    descriptors gets the zero vector: a few descriptors of a flat or smooth image fall in the
    same cells whatever the image, so their VLAD vectors would be near-identical; the zero
    vector is "no evidence" instead (its similarity to every image is 0, and the projection and
    the global search keep it so). Pass ``index`` (:func:`centroid_index`) to reuse it.
    """
    centroids = np.asarray(centroids, dtype=np.float32)
    x = to_unit(descriptors)
    if len(x) < max(1, min_descriptors):
        return np.zeros(centroids.size, dtype=np.float32)
    index = index if index is not None else centroid_index(centroids)
    _, nearest = index.search(x, 1)
    residuals = aggregate_residuals(x, nearest[:, 0], centroids)
    return normalize_vlad(residuals, power)


def embed_sift_shard(
    sift_shard_path: str | os.PathLike,
    codebook_path: str | os.PathLike,
    out_path: str | os.PathLike,
    params: VladParams,
) -> int:
    """VLAD-encode every image of a SIFT shard into an embedding shard; returns the image count.

    Vectors are stored float16 with width ``codebook_size · 128`` (also for an empty shard).
    """
    centroids = read_codebook(codebook_path)
    if centroids.shape != (params.codebook_size, DESCRIPTOR_DIM):
        raise ValueError(
            f"codebook {codebook_path} has shape {centroids.shape}, "
            f"config asks for {params.codebook_size} centroids: refit the codebook"
        )
    features = read_sift_shard(sift_shard_path)
    index = centroid_index(centroids)
    vectors = np.zeros((len(features), params.dim), dtype=np.float32)
    progress = Progress(len(features), "images", log=logger)
    with single_faiss_thread():
        for row, feats in enumerate(features):
            vectors[row] = vlad_encode(
                feats.descriptors, centroids, params.power, index, params.min_descriptors
            )
            progress.advance()
    progress.done()
    write_embedding_shard(out_path, [f.id for f in features], vectors, dim=params.dim)
    n_empty = sum(len(f.descriptors) < params.min_descriptors for f in features)
    logger.info(
        "%s: %d images (%d with fewer than %d descriptors: no vector)",
        sift_shard_path,
        len(features),
        n_empty,
        params.min_descriptors,
    )
    return len(features)
