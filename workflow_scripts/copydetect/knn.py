"""Exact top-k over a faiss index, and the merge of top-k lists of disjoint parts (shards).

One engine for the local (L2 over uint8 SIFT) and the global (inner product over embeddings)
search. faiss proposes neighbours; what it cannot guarantee, this module does:

- **Ties go to the smaller row.** faiss (a GPU k-select above all) may cut a tie at the k-th
  place either way. :func:`tie_safe_topk` searches k + 1 and, where faiss' last returned score is
  within ``tolerance`` of the k-th, searches that row again 4× wider until the tie is seen whole.
- **Exact scores.** A searcher may rescore faiss' candidates exactly (``rescore``); the widening
  then also covers rounding swaps near the cut-off (``tolerance`` > 0).
- **Shards merge exactly.** :func:`merge_topk` orders by (score, key) so a top-k of a split
  equals the top-k of the whole, when each part's rows are ordered like the global key.

Scores are distances (smaller first) unless the searcher is ``descending`` (similarities).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

logger = logging.getLogger(__name__)

GPU_MAX_K = 2048  # faiss GPU k-selection limit
GPU_MODES = ("auto", "never", "always")
RESULT_BUDGET = 1 << 20  # query rows × width of one faiss call (bounds the result arrays)
_LAST = np.iinfo(np.int64).max  # sorts a missing row (-1) after every real one

Rescore = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (queries, rows) -> exact float64


@dataclass
class Device:
    """Where faiss indexes live: GPU resources (kept alive here) or None = CPU."""

    resources: Any = None

    @classmethod
    def choose(cls, use_gpu: str, setting: str = "use_gpu") -> Device:
        """The GPU when faiss-gpu sees one and ``use_gpu`` allows it (auto | never | always)."""
        if use_gpu not in GPU_MODES:
            raise ValueError(f"{setting} must be one of {GPU_MODES}, got {use_gpu!r}")
        available = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
        if use_gpu == "always" and not available:
            raise RuntimeError(f"{setting} is 'always' but faiss sees no GPU (faiss-gpu needed)")
        # One line per job that builds an index; benchmarks/gpu_check.py reads it.
        if available and use_gpu != "never":
            logger.info("faiss device: gpu")
            return cls(faiss.StandardGpuResources())
        logger.info("faiss device: cpu")
        return cls()

    @property
    def is_gpu(self) -> bool:
        return self.resources is not None

    @property
    def max_k(self) -> int:
        return GPU_MAX_K if self.is_gpu else sys.maxsize

    def flat_ip(
        self, vectors: np.ndarray, rescore: Rescore | None = None, tolerance: float = 0.0
    ) -> Searcher:
        """An inner-product searcher over ``vectors`` (float32 storage on GPU too)."""
        d = vectors.shape[1]
        index = faiss.GpuIndexFlatIP(self.resources, d) if self.is_gpu else faiss.IndexFlatIP(d)
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return Searcher(index, self.max_k, True, rescore, tolerance, self)


@dataclass
class Searcher:
    """A filled faiss index and how to read its results.

    ``rescore(queries, rows)`` (optional) returns exact float64 scores of the rows faiss found
    (rows -1 = none); ``tolerance`` bounds |faiss score − exact score|. ``device`` keeps GPU
    resources alive as long as the index. ``row_keys`` (optional) orders equal scores when the
    rows do not (an index merged from parts whose rows interleave in the global order).
    """

    index: Any
    max_k: int = sys.maxsize
    descending: bool = False  # similarities (larger first) instead of distances
    rescore: Rescore | None = None
    tolerance: float = 0.0
    device: Device | None = None
    row_keys: np.ndarray | None = None  # int64 [m]: tie order of each row (None: the row)


def _search_sorted(
    searcher: Searcher, x: np.ndarray, width: int, k: int, cells: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One faiss search of ``width``, as distances (similarities negated) ordered by
    (distance, row), missing = (inf, -1). ``cells``: the IVF cells to scan per query row
    (an IVF index searched with a coarse assignment made once for many shards).

    Returns the first k distances and rows, and faiss' own last distance (the bound on every row
    it did not return; inf when it returned fewer than ``width``: nothing is hidden).
    """
    if cells is None:
        raw, idx = searcher.index.search(x, width)
    else:
        raw, idx = searcher.index.search_preassigned(x, width, cells.astype(np.int64), None)
    idx = idx.astype(np.int64)
    sign = -1 if searcher.descending else 1
    if searcher.rescore is None:
        dist = np.where(idx < 0, np.float32(np.inf), sign * raw).astype(np.float32)
    else:
        dist = sign * searcher.rescore(x, idx)
        dist[idx < 0] = np.inf
    tie = idx if searcher.row_keys is None else searcher.row_keys[np.maximum(idx, 0)]
    order = np.lexsort((np.where(idx < 0, _LAST, tie), dist), axis=-1)[:, :k]
    bound = np.where(idx[:, -1] < 0, np.inf, sign * raw[:, -1])
    return np.take_along_axis(dist, order, -1), np.take_along_axis(idx, order, -1), bound


def tie_safe_topk(
    searcher: Searcher,
    queries: np.ndarray,
    k: int,
    m: int,
    budget: int = RESULT_BUDGET,
    cells: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``m`` indexed rows for every query, ties broken by the smaller row.

    Returns scores [n, k] (faiss' float32, or the rescore's float64; ascending distances, or
    descending similarities; ±inf = none) and rows int64 [n, k] (-1 = none); equal scores go to
    the smaller row, or the smaller ``searcher.row_keys`` of it when given. A query row whose
    faiss cut-off is within ``searcher.tolerance`` of its k-th score may hide a tie (or a
    rounding swap), so it is searched again 4× wider until it is safe; ``budget`` bounds
    rows × width of one faiss call. ``cells`` (IVF only): each query row's coarse cells [n,
    nprobe], so every shard of a collection scans the same cells.
    """
    n = len(queries)
    dtype = np.float32 if searcher.rescore is None else np.float64
    dist, rows = np.full((n, k), np.inf, dtype=dtype), np.full((n, k), -1, dtype=np.int64)
    todo, width = np.arange(n), min(k + 1, m, searcher.max_k)
    while len(todo) and m:
        unsure, step = [], max(1, budget // width)
        for start in range(0, len(todo), step):
            batch = todo[start : start + step]
            x = np.ascontiguousarray(queries[batch], dtype=np.float32)
            d, r, bound = _search_sorted(
                searcher, x, width, k, None if cells is None else cells[batch]
            )
            dist[batch, : d.shape[1]], rows[batch, : r.shape[1]] = d, r
            if width < m:  # a row faiss could not fill (IVF) hides nothing more
                hidden = np.isfinite(bound) & (bound <= dist[batch, k - 1] + searcher.tolerance)
                unsure.append(batch[hidden])
        todo = np.concatenate(unsure) if unsure else todo[:0]
        if len(todo) and width >= searcher.max_k:
            logger.warning("%d rows tied beyond width %d; keeping faiss' choice", len(todo), width)
            break
        width = min(4 * width, m, searcher.max_k)
    return (-dist if searcher.descending else dist), rows


def merge_topk(
    scores_a: np.ndarray,
    keys_a: np.ndarray,
    scores_b: np.ndarray,
    keys_b: np.ndarray,
    k: int,
    descending: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact merge of two row-aligned top lists of disjoint items into the top k.

    Rows are ordered by (score, key): equal scores go to the smaller key (ints, or strings), so
    the result does not depend on how the items were split. Missing entries are (±inf, -1 or "")
    and are padded in when there are fewer than k entries in all. Returns the scores, the keys
    and, for carrying other columns along, each result's column in ``[a | b]`` (-1 = padding).
    """
    scores = np.concatenate([scores_a, scores_b], axis=1)
    keys = np.concatenate([keys_a, keys_b], axis=1)
    order = np.lexsort((keys, -scores if descending else scores), axis=-1)[:, :k]
    scores, keys = np.take_along_axis(scores, order, -1), np.take_along_axis(keys, order, -1)
    if order.shape[1] < k:  # fewer candidates than k in total: pad
        pad = ((0, 0), (0, k - order.shape[1]))
        scores = np.pad(scores, pad, constant_values=-np.inf if descending else np.inf)
        keys = np.pad(keys, pad, constant_values="" if keys.dtype.kind == "U" else -1)
        order = np.pad(order, pad, constant_values=-1)
    return scores, keys, order
