"""Local-descriptor retrieval of the weights-free branch (ISC2021 image-fingerprint style).

Every query descriptor votes for the reference image owning its nearest reference descriptor;
references with many votes become candidates for verification.

Index. By default (``local.index.type: ivf``) each reference shard is a file of inverted lists
built once against one coarse quantizer shared by the whole collection
(:mod:`copydetect.local_index`): each query descriptor is assigned its ``nprobe`` cells once per
query shard (rule ``assign_local_cells``) and those cells are scanned in every shard, so the cost
per query descriptor follows the list length, not |R|. ``flat`` reads the SIFT shards and scans
every reference descriptor (exact, linear in |R|).

Sharding. One ``local_search`` job per (query shard × group of reference shards) searches the
group's shards a run at a time and keeps a running top-k per query descriptor, so its memory is
bounded by one query shard plus one run, never by |R|: ``flat`` runs are single shards, ``ivf``
runs are shards merged into one index up to ``RUN_DESCRIPTORS`` descriptors (a probed cell costs
about a microsecond per visit however short it is: visited once per run, not once per shard).
One ``local_candidates`` job per query shard folds the groups' neighbour files one at a time
(memory bounded by the query shard × k) and turns the 1-NN into votes.

Exactness. Descriptors are uint8, so squared L2 distances are integers below 128 · 255² < 2**24:
every partial sum of faiss' ``‖q‖² + ‖r‖² − 2 q·r`` is exact in float32 whatever the summation
order (float16 storage on GPU is lossless for 0..255 too). The only freedom left is the order of
ties, and ties are frequent (duplicate references share descriptors exactly). Ties are broken
everywhere by the global reference descriptor key (reference id, keypoint index): within a shard
by storing descriptors in that order (in a merged ``ivf`` run, whose shards' ids interleave, by
each row's global key) and widening the search until the tie at the k-th place is fully seen
(:mod:`copydetect.knn`), across runs and groups by ``knn.merge_topk``. Hence
sharded == unsharded, bit for bit: for ``flat`` (exact), and for ``ivf``, whose lists store the
bytes as is (the same integer distances) and whose cells are the same in every shard.

Distances are stored squared (exact integers); ``max_distance`` and ``mean_distance`` are in plain
L2 units.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import h5py
import numpy as np

from copydetect.atomic import atomic_path
from copydetect.knn import Device, Searcher, merge_topk, tie_safe_topk
from copydetect.local_index import (
    file_crc32,
    read_coarse_index,
    read_shard_index,
    read_shard_index_ids,
    read_shard_index_size,
)
from copydetect.params import config_params
from copydetect.progress import Progress
from copydetect.shards import STRING, SiftFeatures, read_shard_ids, read_sift_shard

if TYPE_CHECKING:  # pandas costs ~0.8 CPU-s to import: only the vote counting jobs load it
    import pandas as pd

logger = logging.getLogger(__name__)

DIM = 128
QUERY_CHUNK = 16_384  # query rows per faiss call: bounds the float32 copy and the result arrays
ADD_CHUNK = 65_536  # reference rows converted to float32 at a time while filling the index
TIE_BUDGET = 1 << 22  # rows × width of one tie-widening search (≈ 50 MB of results)
# Reference descriptors of one merged run of ivf shards (≈ 136 B each in the lists, ≈ 480 MB;
# a job's peak is about twice that while merging): each probed cell costs ~1 µs per visit
# whatever its length, so a query descriptor pays it once per run, not once per shard; the cap
# keeps a job's memory flat as the collection grows (benchmarks/results.md, local recall at
# 10k vs 100k: 5 shards of 2,000 references per run).
RUN_DESCRIPTORS = 3_500_000
_KP_BITS = 32  # key = ref_index << 32 | keypoint: both fit int32, the key fits int64
VOTE_COLUMNS = [
    "query_id",
    "reference_id",
    "reference_shard",
    "votes",
    "distinct_ref_keypoints",
    "mean_distance",
]


@config_params("local.search")
class LocalSearchParams:
    """Parameters of the descriptor k-NN search (the ``local.search`` section of the config).

    ``k = 1`` is the default: a vote only needs the 1-NN, and k multiplies the neighbour files and
    the merge work (the ``ratio`` vote filter needs ``k >= 2``).
    """

    k: int
    nprobe: int  # IVF cells scanned per query descriptor (local.index.type: ivf)
    use_gpu: str  # auto: GPU when faiss-gpu sees one; never; always (flat index only)


@config_params("local.votes")
class VoteParams:
    """Which neighbours vote (the ``local.votes`` section of the config).

    ``ratio`` (off by default, needs ``k >= 2``) drops a vote when the 1-NN is not clearly
    closer than the nearest descriptor of a *different* reference among the k kept: it silences
    descriptors shared by many references (text, logos, borders). When every kept neighbour
    belongs to the same reference the vote passes: the descriptor is distinctive.
    """

    max_distance: float | None  # L2 (not squared); votes farther away are dropped
    ratio: float | None  # distinct-reference ratio test on L2 distances; None = off


@config_params("local.candidates")
class CandidateParams:
    """Which voted references become candidates (the ``local.candidates`` section)."""

    candidates_per_query: int
    min_votes: int


@dataclass
class Neighbors:
    """Top-k reference descriptors of every descriptor of one query shard (rows in shard order).

    ``ref_ids`` is sorted and unique, so ``(ref_index, ref_keypoint)`` orders like the global key
    (reference id, keypoint index) used to break distance ties.
    """

    ref_ids: list[str]  # references seen in the top-k, sorted
    ref_shards: list[str]  # shard name (file stem) of each ref id
    distances: np.ndarray  # float32 [n, k], squared L2, inf = no neighbour
    ref_index: np.ndarray  # int32 [n, k], index into ref_ids, -1 = no neighbour
    ref_keypoint: np.ndarray  # int32 [n, k], descriptor index within its reference, -1 = none

    @property
    def n(self) -> int:
        return len(self.distances)

    @property
    def k(self) -> int:
        return self.distances.shape[1]

    def keys(self) -> np.ndarray:
        """int64 [n, k] tie-break keys ordered like (reference id, keypoint); -1 = none."""
        return _encode_keys(self.ref_index, self.ref_keypoint)


def _encode_keys(ref_index: np.ndarray, keypoint: np.ndarray) -> np.ndarray:
    keys = (ref_index.astype(np.int64) << _KP_BITS) | keypoint.astype(np.int64)
    return np.where(ref_index >= 0, keys, -1)


@dataclass(frozen=True)
class QueryLayout:
    """Which query image owns each descriptor row of a SIFT shard."""

    ids: list[str]
    offsets: np.ndarray  # int64 [n_images + 1]

    @classmethod
    def from_features(cls, features: Sequence[SiftFeatures]) -> QueryLayout:
        counts = np.array([len(f.descriptors) for f in features], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls([f.id for f in features], offsets)

    @property
    def n_descriptors(self) -> int:
        return int(self.offsets[-1])


# --- faiss k-NN --------------------------------------------------------------------------------


def _add_chunked(index: Any, ref: np.ndarray) -> None:
    """Add uint8 rows as float32 a chunk at a time, so no full float32 copy coexists with the
    index's own."""
    for start in range(0, len(ref), ADD_CHUNK):
        index.add(np.ascontiguousarray(ref[start : start + ADD_CHUNK], dtype=np.float32))


def build_searcher(ref: np.ndarray, params: LocalSearchParams) -> Searcher:
    """Exact flat index of the uint8 reference descriptors, on GPU when wanted (float16 storage
    halves GPU memory and is lossless for 0..255)."""
    device = Device.choose(params.use_gpu, "local.search.use_gpu")
    if device.is_gpu:
        config = faiss.GpuIndexFlatConfig()
        config.useFloat16 = True
        index = faiss.GpuIndexFlatL2(device.resources, DIM, config)
    else:
        index = faiss.IndexFlatL2(DIM)
    _add_chunked(index, ref)
    return Searcher(index, device.max_k, device=device)


def descriptor_knn(
    query_desc: np.ndarray,
    ref_desc: np.ndarray,
    params: LocalSearchParams,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest reference descriptors of every query descriptor.

    Returns ``dist`` float32 [n, k] (squared L2, ascending, inf where fewer than k references) and
    ``idx`` int64 [n, k] (row of ``ref_desc``, -1 where none). Ties go to the smaller row.
    ``progress``, when given, counts the query rows searched.
    """
    n, m, k = len(query_desc), len(ref_desc), params.k
    dist = np.full((n, k), np.inf, dtype=np.float32)
    idx = np.full((n, k), -1, dtype=np.int64)
    if n == 0 or m == 0:
        if progress is not None:
            progress.advance(n)
        return dist, idx
    searcher = build_searcher(np.asarray(ref_desc, dtype=np.uint8).reshape(-1, DIM), params)
    for start in range(0, n, QUERY_CHUNK):
        chunk = np.ascontiguousarray(query_desc[start : start + QUERY_CHUNK], dtype=np.float32)
        dist[start : start + len(chunk)], idx[start : start + len(chunk)] = tie_safe_topk(
            searcher, chunk, k, m, TIE_BUDGET
        )
        if progress is not None:
            progress.advance(len(chunk))
    return dist, idx


# --- one search job: a query shard against a group of reference shards -----------------------


def stack_query_descriptors(path: str | os.PathLike) -> np.ndarray:
    """uint8 [n, 128]: a SIFT shard's descriptors in shard order (the rows of its neighbours)."""
    return _stack_descriptors(read_sift_shard(path))


def _stack_descriptors(features: Sequence[SiftFeatures]) -> np.ndarray:
    if not features:
        return np.zeros((0, DIM), dtype=np.uint8)
    return np.concatenate([f.descriptors for f in features]).astype(np.uint8).reshape(-1, DIM)


def _group_ref_ids(
    paths: Sequence[str | os.PathLike], ids: Mapping[str, list[str]]
) -> dict[str, str]:
    """Reference id -> shard name for a group, checking that no id is in two shards (their
    keys would collide)."""
    owner: dict[str, str] = {}
    for path in paths:
        shard = Path(path).stem  # once per shard: a Path per id cost seconds per 10k references
        for ref_id in ids[os.fspath(path)]:
            if owner.setdefault(ref_id, shard) != shard:
                raise ValueError(f"reference {ref_id!r} is in shards {owner[ref_id]} and {path}")
    return owner


@dataclass
class ShardHits:
    """Top-k rows of one reference shard: rows number the descriptors of ``ids`` (sorted) in
    order, image i owning rows ``offsets[i]:offsets[i + 1]``."""

    ids: list[str]
    offsets: np.ndarray  # int64 [n_images + 1]
    distances: np.ndarray  # float32 [n, k]
    rows: np.ndarray  # int64 [n, k], -1 = none


class FlatShards:
    """The exact index: each reference SIFT shard is read and indexed whole by the search job."""

    read_ids = staticmethod(read_shard_ids)

    def runs(self, paths: Sequence[str | os.PathLike]) -> list[list[str | os.PathLike]]:
        return [[path] for path in paths]  # a flat shard is indexed whole: one at a time

    def search(
        self,
        query_desc: np.ndarray,
        paths: Sequence[str | os.PathLike],
        params: LocalSearchParams,
        progress: Progress,
        rank: Mapping[str, int],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k distances and global keys over one shard."""
        (path,) = paths
        features = sorted(read_sift_shard(path), key=lambda f: f.id)
        counts = np.array([len(f.descriptors) for f in features], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        ids = [f.id for f in features]
        ref_desc = _stack_descriptors(features)
        del features  # the shard as read (keypoints too) need not live alongside the index
        dist, rows = descriptor_knn(query_desc, ref_desc, params, progress)
        return _shard_topk(ShardHits(ids, offsets, dist, rows), rank)


@dataclass
class QueryCells:
    """The coarse cells every descriptor of a query shard scans (rule ``assign_local_cells``):
    assigned once per query shard, not once per search job, and the same in every shard."""

    cells: np.ndarray  # int32 [n, nprobe], nearest first
    nlist: int
    coarse_crc32: int  # the coarse index they were assigned with

    @property
    def nprobe(self) -> int:
        return self.cells.shape[1]


def assign_cells(query_desc: np.ndarray, coarse_path: str | os.PathLike, nprobe: int) -> QueryCells:
    """The ``nprobe`` nearest cells of every query descriptor (fewer when nlist is smaller)."""
    coarse = read_coarse_index(coarse_path)
    nprobe = min(nprobe, coarse.nlist)
    cells = np.empty((len(query_desc), nprobe), dtype=np.int32)
    for start in range(0, len(query_desc), QUERY_CHUNK):
        chunk = np.ascontiguousarray(query_desc[start : start + QUERY_CHUNK], np.float32)
        cells[start : start + len(chunk)] = coarse.quantizer.search(chunk, nprobe)[1]
    return QueryCells(cells, int(coarse.nlist), file_crc32(coarse_path))


def write_cells(path: str | os.PathLike, cells: QueryCells) -> None:
    """Write a query shard's cells atomically (HDF5)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("cells", data=cells.cells.astype(np.int32))
        f.attrs["nlist"] = cells.nlist
        f.attrs["coarse_crc32"] = cells.coarse_crc32


def read_cells(path: str | os.PathLike) -> QueryCells:
    with h5py.File(path, "r") as f:
        return QueryCells(f["cells"][:], int(f.attrs["nlist"]), int(f.attrs["coarse_crc32"]))


class IvfShards:
    """The inverted file: shard indexes built once against one coarse quantizer. Each query
    descriptor's cells are assigned once (:class:`QueryCells`); the group's shards are searched
    as few merged indexes (runs), so each probed cell is visited once per run, not per shard."""

    read_ids = staticmethod(read_shard_index_ids)

    def __init__(self, cells: QueryCells, n_queries: int, nprobe: int):
        if len(cells.cells) != n_queries:
            raise ValueError(f"{len(cells.cells)} query cells for {n_queries} query descriptors")
        if cells.nprobe != min(nprobe, cells.nlist):
            raise ValueError(f"cells assigned for nprobe {cells.nprobe}, searching with {nprobe}")
        self.coarse_crc32, self.nprobe, self.cells = cells.coarse_crc32, cells.nprobe, cells.cells
        logger.info("ivf: %d cells, %d scanned per query descriptor", cells.nlist, self.nprobe)

    def runs(self, paths: Sequence[str | os.PathLike]) -> list[list[str | os.PathLike]]:
        sizes = [read_shard_index_size(p) for p in paths]
        return plan_runs(paths, sizes, RUN_DESCRIPTORS)

    def search(
        self,
        query_desc: np.ndarray,
        paths: Sequence[str | os.PathLike],
        params: LocalSearchParams,
        progress: Progress,
        rank: Mapping[str, int],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k distances and global keys over one run of shards."""
        index, ids, offsets = self._merged(paths)
        index.nprobe = self.nprobe
        # Rows of a run interleave in the global (reference id, keypoint) order when shards do
        # (hash sharding): faiss' ties are ordered by the rows' global keys instead.
        row_keys = _row_keys(ids, offsets, rank)
        searcher, m = Searcher(index, row_keys=row_keys), int(offsets[-1])
        dist = np.full((len(query_desc), params.k), np.inf, dtype=np.float32)
        rows = np.full((len(query_desc), params.k), -1, dtype=np.int64)
        for start in range(0, len(query_desc), QUERY_CHUNK):
            part = slice(start, start + QUERY_CHUNK)
            chunk = np.ascontiguousarray(query_desc[part], dtype=np.float32)
            if m:
                dist[part], rows[part] = tie_safe_topk(
                    searcher, chunk, params.k, m, TIE_BUDGET, self.cells[part]
                )
            progress.advance(len(chunk) * len(paths))
        keys = np.where(rows >= 0, row_keys[np.maximum(rows, 0)] if m else -1, -1)
        return dist, keys

    def _merged(self, paths: Sequence[str | os.PathLike]) -> tuple[Any, list[str], np.ndarray]:
        """One index holding the run's shards' lists, rows numbered shard after shard (faiss'
        ``merge_from`` shifts each shard's rows by the rows before it)."""
        index, ids, offsets = None, [], [np.zeros(1, dtype=np.int64)]
        for path in paths:
            shard = read_shard_index(path)
            if shard.coarse_crc32 != self.coarse_crc32:
                raise ValueError(f"{path} was indexed against another coarse index: rebuild it")
            rows_before = int(offsets[-1][-1])
            if index is None:
                index = shard.index
            else:
                index.merge_from(shard.index, rows_before)
            ids += shard.ids
            offsets.append(shard.offsets[1:] + rows_before)
            del shard  # its lists were moved into the run's index
        return index, ids, np.concatenate(offsets)


def _row_keys(ids: Sequence[str], offsets: np.ndarray, rank: Mapping[str, int]) -> np.ndarray:
    """int64 [rows]: the global key (rank of the image id << 32 | keypoint) of every row, image
    i owning rows ``offsets[i]:offsets[i + 1]``."""
    counts = np.diff(offsets)
    image_rank = np.array([rank[i] for i in ids], dtype=np.int64)
    first = np.repeat(offsets[:-1], counts)
    return (np.repeat(image_rank, counts) << _KP_BITS) | (np.arange(offsets[-1]) - first)


def plan_runs(
    paths: Sequence[str | os.PathLike], sizes: Sequence[int], budget: int
) -> list[list[str | os.PathLike]]:
    """Split a group's shards, in order, into runs searched as one index each: a run takes the
    next shard while its descriptors stay within ``budget`` (memory: one run at a time); a
    shard over the budget is a run of its own."""
    runs: list[list[str | os.PathLike]] = []
    used = 0
    for path, size in zip(paths, sizes, strict=True):
        if not runs or used + size > budget:
            runs.append([])
            used = 0
        runs[-1].append(path)
        used += size
    return runs


def _shard_topk(hits: ShardHits, rank: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """One shard's top-k with results as global keys (rank of id << 32 | keypoint).

    Images are stacked in id order, so a smaller row is a smaller key and the in-shard tie rule
    of :func:`descriptor_knn` agrees with the global one.
    """
    if hits.offsets[-1] == 0:  # empty shard, or only images without keypoints: nothing found
        return hits.distances, hits.rows
    image_rank = np.array([rank[i] for i in hits.ids], dtype=np.int64)
    rows = np.maximum(hits.rows, 0)
    image = np.searchsorted(hits.offsets, rows, side="right") - 1
    keys = (image_rank[image] << _KP_BITS) | (rows - hits.offsets[image])
    return hits.distances, np.where(hits.rows >= 0, keys, -1)


def search_group(
    query_sift_path: str | os.PathLike,
    reference_paths: Sequence[str | os.PathLike],
    params: LocalSearchParams,
    coarse_path: str | os.PathLike | None = None,
    cells_path: str | os.PathLike | None = None,
) -> Neighbors:
    """Top-k reference descriptors of every query descriptor over a group of reference shards,
    searched one run at a time (memory: query shard + one run: one flat shard, or ivf shards
    merged up to ``RUN_DESCRIPTORS``).

    Without ``coarse_path`` or ``cells_path`` the references are SIFT shards searched exactly;
    with one they are shard index files built against that coarse index
    (:mod:`copydetect.local_index`), the query cells assigned here (``coarse_path``) or read from
    ``assign_local_cells``' file (``cells_path``).
    """
    query_desc = stack_query_descriptors(query_sift_path)
    shards: FlatShards | IvfShards = FlatShards()
    if cells_path is not None or coarse_path is not None:
        cells = (
            read_cells(cells_path)
            if cells_path is not None
            else assign_cells(query_desc, coarse_path, params.nprobe)
        )
        shards = IvfShards(cells, len(query_desc), params.nprobe)
    ids = {os.fspath(p): shards.read_ids(p) for p in reference_paths}
    owner = _group_ref_ids(reference_paths, ids)
    ref_ids = sorted(owner)
    rank = {ref_id: i for i, ref_id in enumerate(ref_ids)}
    dist = np.full((len(query_desc), params.k), np.inf, dtype=np.float32)
    keys = np.full((len(query_desc), params.k), -1, dtype=np.int64)
    # Counted in query descriptors searched against one shard: a shard's index is built (flat)
    # or read (ivf) before its first block, so the rate includes that.
    total = len(query_desc) * len(reference_paths)
    progress = Progress(total, "query descriptors × reference shards", log=logger)
    for run in shards.runs(reference_paths):
        start = time.perf_counter()
        dist_s, keys_s = shards.search(query_desc, run, params, progress, rank)
        dist, keys, _ = merge_topk(dist, keys, dist_s, keys_s, params.k)
        names = ", ".join(Path(p).stem for p in run)
        logger.info("%s: searched in %.1f s", names, time.perf_counter() - start)
    progress.done()
    return _from_keys(ref_ids, [owner[r] for r in ref_ids], dist, keys)


def _from_keys(
    ref_ids: list[str], ref_shards: list[str], dist: np.ndarray, keys: np.ndarray
) -> Neighbors:
    """Decode keys into Neighbors keeping only the references actually seen."""
    ref_index = np.where(keys >= 0, keys >> _KP_BITS, -1)
    keypoint = np.where(keys >= 0, keys & ((1 << _KP_BITS) - 1), -1)
    seen = np.unique(ref_index[ref_index >= 0])
    # seen is sorted, so the compacted ids stay sorted and indices keep their order.
    compact = np.where(ref_index >= 0, np.searchsorted(seen, ref_index), -1)
    return Neighbors(
        [ref_ids[i] for i in seen],
        [ref_shards[i] for i in seen],
        dist.astype(np.float32),
        compact.astype(np.int32),
        keypoint.astype(np.int32),
    )


# --- merging groups ----------------------------------------------------------------------------


def _merge_two(a: Neighbors, b: Neighbors, k: int) -> Neighbors:
    if a.n != b.n:
        raise ValueError(f"neighbour files disagree on query descriptors: {a.n} vs {b.n}")
    owner = dict(zip(a.ref_ids, a.ref_shards, strict=True))
    for ref_id, shard in zip(b.ref_ids, b.ref_shards, strict=True):
        if owner.setdefault(ref_id, shard) != shard:
            raise ValueError(f"reference {ref_id!r} is in shards {owner[ref_id]} and {shard}")
    ref_ids = sorted(owner)
    rank = {ref_id: i for i, ref_id in enumerate(ref_ids)}

    def rekey(nb: Neighbors) -> np.ndarray:
        new_index = np.array([rank[r] for r in nb.ref_ids] + [-1], dtype=np.int64)
        # Index -1 picks the trailing -1, so missing entries stay missing.
        return _encode_keys(new_index[nb.ref_index], nb.ref_keypoint)

    dist, keys, _ = merge_topk(a.distances, rekey(a), b.distances, rekey(b), k)
    return _from_keys(ref_ids, [owner[r] for r in ref_ids], dist, keys)


def merge_neighbors(neighbors: Iterable[Neighbors], k: int) -> Neighbors:
    """Global top-k over several groups' neighbours of the same query shard.

    Folds one at a time, so an iterator of lazily read files keeps memory at two files.
    """
    merged: Neighbors | None = None
    for nb in neighbors:
        merged = _merge_two(merged if merged is not None else _no_neighbors(nb.n), nb, k)
    if merged is None:
        raise ValueError("merge_neighbors needs at least one neighbour set")
    return merged


def _no_neighbors(n: int) -> Neighbors:
    """Zero neighbours for n rows: the neutral start of a fold."""
    none = np.zeros((n, 0), dtype=np.int32)
    return Neighbors([], [], np.zeros((n, 0), dtype=np.float32), none, none)


# --- files -------------------------------------------------------------------------------------


def write_neighbors(path: str | os.PathLike, neighbors: Neighbors) -> None:
    """Write a neighbours file atomically (HDF5; distances are squared L2)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("ref_ids", data=np.array(neighbors.ref_ids, dtype=object), dtype=STRING)
        f.create_dataset(
            "ref_shards", data=np.array(neighbors.ref_shards, dtype=object), dtype=STRING
        )
        f.create_dataset("distances", data=neighbors.distances.astype(np.float32))
        f.create_dataset("ref_index", data=neighbors.ref_index.astype(np.int32))
        f.create_dataset("ref_keypoint", data=neighbors.ref_keypoint.astype(np.int32))
        f.attrs["distance"] = "squared_l2"


def read_neighbors(path: str | os.PathLike) -> Neighbors:
    """Read a neighbours file written by :func:`write_neighbors`."""
    with h5py.File(path, "r") as f:
        return Neighbors(
            list(f["ref_ids"].asstr()[:]),
            list(f["ref_shards"].asstr()[:]),
            f["distances"][:],
            f["ref_index"][:],
            f["ref_keypoint"][:],
        )


# --- votes and candidates ----------------------------------------------------------------------


def vote_mask(neighbors: Neighbors, params: VoteParams) -> np.ndarray:
    """bool [n]: which query descriptors cast a vote for their 1-NN reference."""
    d1 = neighbors.distances[:, 0].astype(np.float64)
    first = neighbors.ref_index[:, 0]
    mask = first >= 0
    if params.max_distance is not None:
        mask &= d1 <= params.max_distance**2
    if params.ratio is not None:
        # Nearest kept neighbour of another reference; none in the top-k counts as infinitely far.
        other = (neighbors.ref_index != first[:, None]) & (neighbors.ref_index >= 0)
        d_other = np.where(other, neighbors.distances, np.inf).min(axis=1, initial=np.inf)
        mask &= (d1 < params.ratio**2 * d_other) | np.isinf(d_other)
    return mask


def count_votes(layout: QueryLayout, neighbors: Neighbors, params: VoteParams) -> pd.DataFrame:
    """Votes per (query, reference): 1-NN references of the query's descriptors that pass
    :func:`vote_mask`, with distinct reference keypoints hit and the mean L2 distance."""
    import pandas as pd

    if layout.n_descriptors != neighbors.n:
        raise ValueError(
            f"query shard has {layout.n_descriptors} descriptors, neighbours {neighbors.n}"
        )
    owner = np.repeat(np.arange(len(layout.ids)), np.diff(layout.offsets))
    mask = vote_mask(neighbors, params)
    hits = pd.DataFrame(
        {
            "q": owner[mask],
            "r": neighbors.ref_index[mask, 0],
            "kp": neighbors.ref_keypoint[mask, 0],
            "d": np.sqrt(neighbors.distances[mask, 0].astype(np.float64)),
        }
    )
    grouped = hits.groupby(["q", "r"], sort=True).agg(
        votes=("kp", "size"), distinct_ref_keypoints=("kp", "nunique"), mean_distance=("d", "mean")
    )
    grouped = grouped.reset_index()
    ids, ref_ids = np.array(layout.ids, dtype=object), np.array(neighbors.ref_ids, dtype=object)
    shards = np.array(neighbors.ref_shards, dtype=object)
    votes = pd.DataFrame(
        {
            "query_id": ids[grouped["q"].to_numpy()],
            "reference_id": ref_ids[grouped["r"].to_numpy()],
            "reference_shard": shards[grouped["r"].to_numpy()],
            "votes": grouped["votes"].to_numpy(np.int64),
            "distinct_ref_keypoints": grouped["distinct_ref_keypoints"].to_numpy(np.int64),
            "mean_distance": grouped["mean_distance"].to_numpy(np.float64),
        }
    )
    return votes.sort_values(["query_id", "reference_id"], kind="stable", ignore_index=True)


def select_candidates(
    votes: pd.DataFrame, candidates_per_query: int, min_votes: int
) -> pd.DataFrame:
    """Up to ``candidates_per_query`` references per query with at least ``min_votes`` votes,
    best first: more votes, more distinct keypoints, smaller mean distance, then reference id."""
    kept = votes[votes["votes"] >= min_votes]
    kept = kept.sort_values(
        ["query_id", "votes", "distinct_ref_keypoints", "mean_distance", "reference_id"],
        ascending=[True, False, False, True, True],
        kind="stable",
    )
    top = kept.groupby("query_id", sort=False).head(candidates_per_query)
    return top[VOTE_COLUMNS].reset_index(drop=True)
