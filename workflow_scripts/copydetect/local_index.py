"""The inverted file of the local branch: one coarse quantizer shared by every reference shard.

Exhaustive k-NN of every query descriptor against every reference descriptor grows linearly with
the collection (benchmarks/results.md: 51,600 CPU-hours at 1M references). The ``ivf`` index
scans only the ``nprobe`` cells nearest to each query descriptor:

- **One coarse quantizer** (k-means centroids) is fitted once, on the training set's RootSIFT
  (or the references' when there is none): rule ``fit_local_index``. Every reference shard is
  then indexed on its own against it (rule ``index_local_shard``), so a new shard only fills its
  own inverted lists, nothing is retrained, and a query descriptor probes the same cells in
  every shard: the top-k merged over shards equals the top-k of one index over all of them.
- **Exact distances at 1 byte per dimension.** The lists store the uint8 RootSIFT as is (faiss'
  ``QT_8bit_direct`` scalar quantizer, not residuals), so a distance is the same integer as the
  flat index's (see :mod:`copydetect.local_search`), at a quarter of a float index's memory.
- **Cells follow the collection's size** (``nlist: auto``): about ``list_length`` descriptors per
  cell, from the reference count rounded to a power of two at planning time, so the scan per
  query descriptor (``nprobe`` × list length) stays flat as the collection grows.

A shard index file is HDF5: the serialized faiss index (``faiss_index``), the image ids in the
order their descriptors were added (sorted) and their row offsets, and the CRC32 of the coarse
index it was built against (a search refuses shards of different quantizers).
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import faiss
import h5py
import numpy as np

from copydetect.atomic import atomic_path
from copydetect.params import config_params
from copydetect.progress import Progress
from copydetect.shards import STRING, read_sift_shard
from copydetect.vlad import allocate_quota, descriptor_count, single_faiss_thread

logger = logging.getLogger(__name__)
_QUIET = logging.getLogger(f"{__name__}.quiet")  # progress of the many small second-level fits
_QUIET.setLevel(logging.WARNING)

DIM = 128
MIN_CELL_POINTS = 39  # faiss' k-means wants this many training points per centroid
MAX_CELL_POINTS = 512  # more points per cell barely move a centroid: the sample is cut to this
TWO_LEVEL_ABOVE = 1024  # cells: k-means cost ∝ points × cells; two levels of √nlist make it ∝ √
HNSW_ABOVE = 4096  # cells: a flat quantizer costs nlist × 128 per descriptor, HNSW ~ log(nlist)
HNSW_NEIGHBORS = 32
HNSW_EF_SEARCH = 16  # fixed in the file (index build and search assign cells the same way);
# 16 finds 97 % of the 8 nearest of 16,384 cells for 40 µs per descriptor, 128 99.97 % for 213
# (benchmarks/results.md, local recall at 10k vs 100k)
ADD_CHUNK = 65_536  # descriptors converted to float32 at a time while filling a shard index


@config_params("local.index")
class LocalIndexParams:
    """The ``local.index`` section: which index, and how its coarse quantizer is fitted."""

    type: str  # ivf (shared coarse quantizer) | flat (exact, exhaustive)
    nlist: int | str  # cells, or "auto"
    list_length: int  # target descriptors per cell for nlist: auto
    max_training_descriptors: int
    iterations: int
    seed: int


def round_pow2(x: float) -> int:
    """The power of two nearest to ``x`` on a log scale (at least 1)."""
    return 1 << max(0, round(math.log2(max(x, 1.0))))


def auto_nlist(reference_images: int, descriptors_per_image: float, list_length: int) -> int:
    """Cells giving about ``list_length`` reference descriptors per cell, a power of two."""
    return round_pow2(reference_images * descriptors_per_image / list_length)


def choose_nlist(
    params: LocalIndexParams, reference_images: int, training_images: int, training: int
) -> int:
    """The cell count: ``nlist`` (or auto from the reference count and the training set's mean
    descriptors per image), capped so k-means gets ``MIN_CELL_POINTS`` points per cell."""
    if params.nlist == "auto":
        per_image = training / max(training_images, 1)
        wanted = auto_nlist(reference_images, per_image, params.list_length)
    else:
        wanted = int(params.nlist)
    usable = min(training, params.max_training_descriptors) // MIN_CELL_POINTS
    nlist = max(1, min(wanted, 1 << max(0, usable.bit_length() - 1)))
    if nlist < wanted:
        logger.warning(
            "%d training descriptors fit %d cells, not %d: the lists will be longer (more "
            "training images or a larger max_training_descriptors fix it)",
            training,
            nlist,
            wanted,
        )
    return nlist


# --- the coarse index --------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSample:
    """Descriptors sampled to fit the coarse quantizer, and what they were sampled from."""

    descriptors: np.ndarray  # uint8 [n, 128]
    images: int  # images of the fit set
    total: int  # descriptors of the fit set


def sample_training(paths: Sequence[str | os.PathLike], budget: int, seed: int) -> TrainingSample:
    """A seeded uniform sample of at most ``budget`` uint8 descriptors over SIFT shards (one
    shard in memory at a time; shards in sorted path order, so the caller's order is moot)."""
    paths = sorted(paths, key=os.fspath)
    counts = [descriptor_count(p) for p in paths]
    quota = allocate_quota(counts, budget)
    rng = np.random.default_rng(seed)
    parts, images = [], 0
    for path, take in zip(paths, quota, strict=True):
        features = read_sift_shard(path)
        images += len(features)
        if take:
            stacked = np.concatenate([f.descriptors for f in features]).reshape(-1, DIM)
            parts.append(stacked[np.sort(rng.choice(len(stacked), int(take), replace=False))])
    sample = np.concatenate(parts) if parts else np.zeros((0, DIM), dtype=np.uint8)
    return TrainingSample(sample.astype(np.uint8), images, int(sum(counts)))


def _quantizer(centroids: np.ndarray) -> Any:
    """Flat (exact) assignment for few cells, HNSW beyond: built on one thread, so its graph,
    hence every assignment, does not depend on the core count."""
    nlist = len(centroids)
    if nlist <= HNSW_ABOVE:
        quantizer = faiss.IndexFlatL2(DIM)
    else:
        quantizer = faiss.IndexHNSWFlat(DIM, HNSW_NEIGHBORS)
        quantizer.hnsw.efSearch = HNSW_EF_SEARCH
    with single_faiss_thread():
        quantizer.add(centroids)
    return quantizer


def _kmeans(x: np.ndarray, nlist: int, params: LocalIndexParams, log: bool = True) -> np.ndarray:
    """k-means centroids, one iteration per faiss call (each starts from the last centroids,
    which gives faiss' own result) so a long fit logs its progress."""
    progress = Progress(params.iterations, "k-means iterations", log=logger if log else _QUIET)
    centroids = None
    for _ in range(params.iterations):
        kmeans = faiss.Kmeans(
            DIM,
            nlist,
            niter=1,
            seed=params.seed,
            max_points_per_centroid=math.ceil(len(x) / nlist),  # the whole (bounded) sample
            verbose=False,
        )
        with single_faiss_thread():  # k-means results must not depend on the core count
            kmeans.train(x, init_centroids=centroids)
        centroids = np.asarray(kmeans.centroids, dtype=np.float32).reshape(nlist, DIM)
        progress.advance()
    progress.done()
    return centroids


def _two_level_kmeans(x: np.ndarray, nlist: int, params: LocalIndexParams) -> np.ndarray:
    """Centroids of many cells at the cost of few: k-means of about √nlist coarse clusters, then
    each cluster's points split into its share of the nlist cells (shares ∝ cluster sizes)."""
    top = _kmeans(x, round_pow2(math.sqrt(nlist)), params)
    assign = _nearest(top, x)
    shares = allocate_quota(np.bincount(assign, minlength=len(top)).tolist(), nlist)
    progress = Progress(nlist, "cells of the second k-means level", log=logger)
    parts = []
    for cluster, share in enumerate(shares):
        points = x[assign == cluster]
        if share == 1:
            parts.append(points.mean(axis=0, keepdims=True))
        elif share > 1:
            seeded = replace(params, seed=params.seed + 1 + cluster)
            parts.append(_kmeans(points, int(share), seeded, log=False))
        progress.advance(int(share))
    progress.done()
    return np.concatenate(parts).astype(np.float32)


def _nearest(centroids: np.ndarray, x: np.ndarray) -> np.ndarray:
    index = faiss.IndexFlatL2(DIM)
    index.add(centroids)
    with single_faiss_thread():
        return index.search(x, 1)[1][:, 0]


def _training_points(sample: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """The sample as float32, cut to ``MAX_CELL_POINTS`` per cell by a seeded draw."""
    x = np.asarray(sample).reshape(-1, DIM)
    if len(x) > nlist * MAX_CELL_POINTS:
        rows = np.random.default_rng(seed).choice(len(x), nlist * MAX_CELL_POINTS, replace=False)
        x = x[np.sort(rows)]
    return np.ascontiguousarray(x, dtype=np.float32)


def fit_coarse_index(sample: np.ndarray, nlist: int, params: LocalIndexParams) -> Any:
    """A trained, empty IVF index of uint8 descriptors stored as is (exact distances)."""
    x = _training_points(sample, nlist, params.seed)
    if nlist > 1:
        if len(x) < nlist:
            raise ValueError(f"{len(x)} training descriptors for {nlist} cells")
        fit = _two_level_kmeans if nlist > TWO_LEVEL_ABOVE else _kmeans
        centroids = fit(x, nlist, params)  # two levels may fall a cell or two short of nlist
    else:  # one cell (a featureless training set has no descriptors at all): the flat scan
        centroids = np.zeros((1, DIM), np.float32) if len(x) == 0 else x.mean(0, keepdims=True)
    return ivf_from_centroids(centroids)


def ivf_from_centroids(centroids: np.ndarray) -> Any:
    """An empty IVF index over these cells, storing uint8 descriptors as they are."""
    index = faiss.IndexIVFScalarQuantizer(
        _quantizer(centroids),
        DIM,
        len(centroids),
        faiss.ScalarQuantizer.QT_8bit_direct,
        faiss.METRIC_L2,
        False,  # by_residual: residuals are not bytes; 8bit_direct must store the values
    )
    index.train(centroids)  # the quantizer is full: this only sets is_trained
    return index


def write_coarse_index(path: str | os.PathLike, index: Any) -> None:
    """Write the trained empty index atomically."""
    with atomic_path(path) as tmp:
        faiss.write_index(index, os.fspath(tmp))


def read_coarse_index(path: str | os.PathLike) -> Any:
    return faiss.read_index(os.fspath(path))


def file_crc32(path: str | os.PathLike) -> int:
    """CRC32 of a file's bytes: which coarse index a shard index was built against."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


# --- shard indexes -----------------------------------------------------------------------------


@dataclass
class ShardIndex:
    """One reference shard's inverted lists: rows are the descriptors of ``ids`` (sorted) in
    order, image i owning rows ``offsets[i]:offsets[i + 1]``."""

    index: Any  # faiss IndexIVFScalarQuantizer
    ids: list[str]
    offsets: np.ndarray  # int64 [n_images + 1]
    coarse_crc32: int

    @property
    def n_descriptors(self) -> int:
        return int(self.offsets[-1])


def build_shard_index(coarse_path: str | os.PathLike, sift_path: str | os.PathLike) -> ShardIndex:
    """Fill a copy of the coarse index with one SIFT shard's descriptors, images in id order
    (so a smaller row is a smaller (reference id, keypoint) key: ties break as in the flat
    search)."""
    index = read_coarse_index(coarse_path)
    features = sorted(read_sift_shard(sift_path), key=lambda f: f.id)
    counts = np.array([len(f.descriptors) for f in features], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    progress = Progress(int(offsets[-1]), "reference descriptors indexed", log=logger)
    batch: list[np.ndarray] = []
    for feats in features:  # one float32 chunk at a time beside the uint8 lists
        batch.append(np.asarray(feats.descriptors, dtype=np.float32).reshape(-1, DIM))
        if sum(len(b) for b in batch) >= ADD_CHUNK or feats is features[-1]:
            rows = np.concatenate(batch)
            index.add(rows)
            progress.advance(len(rows))
            batch = []
    progress.done()
    return ShardIndex(index, [f.id for f in features], offsets, file_crc32(coarse_path))


def write_shard_index(path: str | os.PathLike, shard: ShardIndex) -> None:
    """Write a shard index file atomically (HDF5 around faiss' own serialization)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("faiss_index", data=faiss.serialize_index(shard.index))
        f.create_dataset("ids", data=np.array(shard.ids, dtype=object), dtype=STRING)
        f.create_dataset("offsets", data=shard.offsets.astype(np.int64))
        f.attrs["coarse_crc32"] = shard.coarse_crc32


def read_shard_index_ids(path: str | os.PathLike) -> list[str]:
    """The image ids of a shard index file, without loading the index."""
    with h5py.File(path, "r") as f:
        return list(f["ids"].asstr()[:])


def read_shard_index_size(path: str | os.PathLike) -> int:
    """The descriptor count of a shard index file, without loading the index."""
    with h5py.File(path, "r") as f:
        return int(f["offsets"][-1])


def read_shard_index(path: str | os.PathLike) -> ShardIndex:
    """Read a shard index file written by :func:`write_shard_index`."""
    with h5py.File(path, "r") as f:
        index = faiss.deserialize_index(f["faiss_index"][:])
        return ShardIndex(
            index, list(f["ids"].asstr()[:]), f["offsets"][:], int(f.attrs["coarse_crc32"])
        )
