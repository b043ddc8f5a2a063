"""Global-descriptor search (SSCD / isc2021 baseline style): normalize, k-NN, normalize scores.

Pipeline for one query shard:

1. :class:`Normalization` (fitted once on the training set, or a sample of the references when
   there is none): PCA with whitening, then L2, applied to queries and references alike.
2. :func:`knn_over_shards`: inner-product k-NN over the reference shards read one at a time
   (memory: the query shard + one reference shard), merged into a running top-k.
3. Optional αQE (:func:`alpha_expansion`): each query is replaced by the L2-normalized, similarity
   weighted sum of itself and its first-pass top references, and searched again.
4. Score normalization: ``similarity − β · mean(top-n similarities of the query to the bank)``.
   A query that resembles many unrelated images (textures, text, blank) gets its scores lowered,
   which makes scores comparable across queries, as micro-AP needs.

Exactness. faiss only proposes candidates; every kept similarity is recomputed in float64 from
the float32 vectors of the pair, so a pair's score does not depend on the shard split, the batch
or the device. Ties are broken by reference id: shard rows are indexed in id order, a shard's
search is widened until no candidate within ``TIE_TOL`` of the k-th score can be missed, and the
cross-shard merge orders by (score desc, reference id). Hence sharded == unsharded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from copydetect.atomic import atomic_path
from copydetect.knn import GPU_MAX_K, Device, merge_topk, tie_safe_topk
from copydetect.knn import GPU_MODES as _GPU_MODES
from copydetect.params import from_config
from copydetect.shards import STRING, Embeddings, read_embedding_shard, read_shard_ids

logger = logging.getLogger(__name__)

# Bound on |faiss float32 inner product − exact| for unit vectors (float32 sums of ≤ a few
# thousand terms are off by ~1e-6); a cut-off closer than this to the k-th score is widened.
TIE_TOL = 1e-4
EXACT_BUDGET = 1 << 23  # gathered float64 elements per exact rescoring block (64 MiB)
NORMALIZATION_FORMAT = "copydetect-normalization"
NORMALIZATION_VERSION = 1
CANDIDATE_COLUMNS = [
    "query_id",
    "reference_id",
    "reference_shard",
    "global_similarity",
    "global_normalized",
    "global_rank",
]
_STR = STRING  # normalization files


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64); zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.sqrt((x * x).sum(axis=1, keepdims=True))
    return x / np.maximum(norms, 1e-12)


# --- normalization: PCA / whitening + L2, and the score-normalization bank -------------------


@dataclass(frozen=True)
class NormalizationParams:
    """How the embedding normalization is fitted (the ``normalization`` config section).

    ``pca_dim`` None or 0 = no PCA (L2 only); it is capped at the input dimension. The whitening
    divides by ``sqrt(max(eigenvalue, eigenvalue_floor · largest eigenvalue))``: the floor keeps
    near-empty directions (fewer samples than dimensions, float16 noise) from being blown up.
    """

    pca_dim: int | None = 256
    whiten: bool = True
    bank_size: int = 10_000  # transformed training vectors kept for score normalization
    seed: int = 0  # salt of the id hash that picks the fit sample and the bank
    max_fit_vectors: int = 100_000  # training vectors the PCA sees at most
    eigenvalue_floor: float = 1e-5  # relative to the largest eigenvalue

    def __post_init__(self) -> None:
        if self.pca_dim is not None and self.pca_dim < 0:
            raise ValueError(f"pca_dim must be >= 0 or null, got {self.pca_dim}")
        if self.bank_size < 0:
            raise ValueError(f"bank_size must be >= 0, got {self.bank_size}")
        if self.max_fit_vectors < 2:
            raise ValueError(f"max_fit_vectors must be >= 2, got {self.max_fit_vectors}")
        if not 0 <= self.eigenvalue_floor < 1:
            raise ValueError(f"eigenvalue_floor must be in [0, 1), got {self.eigenvalue_floor}")

    @property
    def uses_pca(self) -> bool:
        return bool(self.pca_dim)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> NormalizationParams:
        """Build from a config dict; unknown keys are an error."""
        return from_config(cls, values, "normalization")


@dataclass(frozen=True)
class Normalization:
    """A fitted embedding transform plus the score-normalization bank (already transformed)."""

    input_dim: int  # 0 = any (identity fitted on no vector)
    mean: np.ndarray | None  # float64 [d]; None = no PCA
    projection: np.ndarray | None  # float64 [d, p], whitening folded in; None = no PCA
    eigenvalues: np.ndarray | None  # float64 [p], PCA eigenvalues (diagnostics)
    bank: np.ndarray  # float32 [b, output_dim], L2-normalized
    bank_ids: list[str]
    n_fit: int = 0  # vectors the PCA was fitted on

    @property
    def output_dim(self) -> int:
        return self.projection.shape[1] if self.projection is not None else self.input_dim

    @classmethod
    def identity(
        cls, dim: int = 0, bank: np.ndarray | None = None, bank_ids: Sequence[str] | None = None
    ) -> Normalization:
        """L2 only; ``bank`` (raw vectors) is L2-normalized and kept for score normalization."""
        bank = l2_normalize(np.zeros((0, dim)) if bank is None else bank).astype(np.float32)
        ids = list(bank_ids) if bank_ids is not None else [str(i) for i in range(len(bank))]
        return cls(dim or bank.shape[1], None, None, None, bank, ids)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """PCA/whitening (when fitted) then L2, in float64, returned as float32 [n, output_dim].

        float64 arithmetic makes a row's result (almost always bit-for-bit) independent of the
        batch it comes in, so a reference scores the same in any shard split.
        """
        x = np.asarray(vectors, dtype=np.float64)
        if len(x) == 0:
            return np.zeros((0, self.output_dim), dtype=np.float32)
        if self.input_dim and x.shape[1] != self.input_dim:
            raise ValueError(
                f"vectors have dim {x.shape[1]}, normalization expects {self.input_dim}"
            )
        if self.projection is not None:
            x = (x - self.mean) @ self.projection
        return l2_normalize(x).astype(np.float32)


def _hash_keys(ids: Sequence[str], seed: int) -> np.ndarray:
    """A seeded pseudo-random uint64 per id: the sample is a function of the id set only, so it
    does not change with the shard split or the order shards are listed in."""
    salt = f"{seed}\0".encode()
    keys = [
        int.from_bytes(hashlib.blake2b(salt + i.encode(), digest_size=8).digest(), "little")
        for i in ids
    ]
    return np.array(keys, dtype=np.uint64)


def _choose_sample(shards: Sequence[str | os.PathLike], size: int, seed: int) -> list[str]:
    """The ``size`` ids with the smallest (hash, id), in that order; reads ids only, one shard
    at a time, so memory is one shard's ids + the sample."""
    keys, ids = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=str)
    for path in shards:
        shard_ids = read_shard_ids(path)
        if not shard_ids or size == 0:
            continue
        keys = np.concatenate([keys, _hash_keys(shard_ids, seed)])
        ids = np.concatenate([ids, np.array(shard_ids, dtype=str)])
        order = np.lexsort((ids, keys))[:size]
        keys, ids = keys[order], ids[order]
    if len(ids) > 1 and (ids[1:] == ids[:-1]).any():
        raise ValueError("an id appears in two training shards; ids must be unique")
    return [str(i) for i in ids]


class _Moments:
    """Running mean and covariance in float64, shifted by the first batch's mean so that the
    E[xxᵀ] − μμᵀ form does not cancel catastrophically (embeddings often have a large mean).

    While fewer rows than dimensions have been added, the shifted rows are kept too (no more
    memory than the d × d sums): with n < d the eigenvectors come from the n × n Gram matrix,
    seconds instead of minutes for 8192-d VLAD and a small training set.
    """

    def __init__(self) -> None:
        self.n, self.shift, self.s1, self.s2 = 0, None, None, None
        self.rows: list[np.ndarray] | None = []

    def add(self, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        x = np.asarray(x, dtype=np.float64)
        if self.shift is None:
            self.shift = x.mean(axis=0)
            self.s1 = np.zeros(x.shape[1])
            self.s2 = np.zeros((x.shape[1], x.shape[1]))
        y = x - self.shift
        self.n, self.s1, self.s2 = self.n + len(x), self.s1 + y.sum(axis=0), self.s2 + y.T @ y
        if self.rows is not None:
            self.rows = self.rows + [y] if self.n < x.shape[1] else None

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        m = self.s1 / self.n
        return self.shift + m, self.s2 / self.n - np.outer(m, m)

    def eigen(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (descending) and eigenvectors [d, k] of the covariance; k = d, or the
        n − 1 directions the rows span when fewer rows than dimensions were added."""
        if self.rows is None:
            evals, evecs = np.linalg.eigh(self.mean_cov()[1])
            return evals[::-1], evecs[:, ::-1]
        centered = np.concatenate(self.rows) - self.s1 / self.n
        evals, u = np.linalg.eigh(centered @ centered.T / self.n)  # cov = Yᵀ Y / n, same λ > 0
        evals, u = evals[::-1], u[:, ::-1]
        keep = evals > 1e-12 * max(evals[0], 1e-300)
        evals, u = evals[keep], u[:, keep]
        return evals, centered.T @ u / np.sqrt(self.n * evals)


def _complete_basis(evecs: np.ndarray, p: int, seed: int = 0) -> np.ndarray:
    """``evecs`` [d, k] (orthonormal) extended to p ≥ k orthonormal columns.

    The added columns span directions the fit vectors do not: their eigenvalue is 0 and,
    like the null-space vectors a full eigendecomposition returns, they are an arbitrary
    basis — here a seeded random one, so the fit stays deterministic.
    """
    d, k = evecs.shape
    if p <= k:
        return evecs[:, :p]
    extra = np.random.default_rng(seed).normal(size=(d, p - k))
    extra -= evecs @ (evecs.T @ extra)
    extra, _ = np.linalg.qr(extra)
    return np.concatenate([evecs, extra], axis=1)


def _pca(
    evals: np.ndarray, evecs: np.ndarray, params: NormalizationParams
) -> tuple[np.ndarray, np.ndarray]:
    """Top eigenvectors [d, p] (whitened when asked) and eigenvalues [p], with canonical signs.

    When the fit vectors span fewer than p directions, the others get eigenvalue 0 and an
    arbitrary orthonormal basis. Whitening divides by sqrt(max(λ, floor × λmax)), so those
    directions keep a (random-projection) trace of a query's residual outside the training
    span; measured on the demo, dropping them instead cut VLAD's micro-AP from 0.64 to 0.37.
    """
    dim = evecs.shape[0]
    p = min(int(params.pca_dim or 0), dim)
    if params.pca_dim and params.pca_dim > dim:
        logger.warning("pca_dim %d > input dim %d: keeping %d", params.pca_dim, dim, p)
    evals = np.maximum(np.concatenate([evals, np.zeros(max(0, p - len(evals)))])[:p], 0.0)
    evecs = _complete_basis(evecs, p, params.seed)
    # eigh's sign is arbitrary: make each vector's largest component positive (canonical form).
    signs = np.sign(evecs[np.argmax(np.abs(evecs), axis=0), np.arange(p)])
    evecs = evecs * np.where(signs == 0, 1.0, signs)
    if params.whiten:
        floor = max(params.eigenvalue_floor * (evals[0] if p else 0.0), 1e-12)
        evecs = evecs / np.sqrt(np.maximum(evals, floor))
    return evecs, evals


def _read_sample(
    shards: Sequence[str | os.PathLike], sample: list[str], n_fit: int, n_bank: int
) -> tuple[_Moments, np.ndarray | None, int]:
    """Second pass: moments of the first ``n_fit`` sample rows and the raw first ``n_bank``."""
    rank = {image_id: i for i, image_id in enumerate(sample)}
    moments, bank, dim = _Moments(), None, 0
    for path in shards:
        emb = read_embedding_shard(path)
        if dim and emb.vectors.shape[1] != dim:
            raise ValueError(f"{path} has dim {emb.vectors.shape[1]}, earlier shards {dim}")
        dim = emb.vectors.shape[1]
        ranks = np.array([rank.get(i, -1) for i in emb.ids], dtype=np.int64)
        moments.add(emb.vectors[(ranks >= 0) & (ranks < n_fit)])
        in_bank = (ranks >= 0) & (ranks < n_bank)
        if bank is None:
            bank = np.zeros((n_bank, dim), dtype=np.float32)
        bank[ranks[in_bank]] = emb.vectors[in_bank]
    return moments, bank, dim


def fit_normalization(
    training_shards: Sequence[str | os.PathLike], params: NormalizationParams
) -> Normalization:
    """Fit PCA (+ whitening) on a seeded sample of the shards' embeddings; keep the bank.

    Two passes over the shards, one at a time: ids to pick the sample (the smallest seeded id
    hashes), then vectors to accumulate the covariance. Memory: one shard + d² + the bank.
    """
    n_fit_max = params.max_fit_vectors if params.uses_pca else 0
    sample = _choose_sample(training_shards, max(n_fit_max, params.bank_size), params.seed)
    n_fit, n_bank = min(n_fit_max, len(sample)), min(params.bank_size, len(sample))
    moments, bank_raw, dim = _read_sample(training_shards, sample, n_fit, n_bank)
    if params.uses_pca:
        if moments.n < 2:
            raise ValueError(f"PCA needs at least 2 training vectors, got {moments.n}")
        mean = moments.shift + moments.s1 / moments.n
        projection, evals = _pca(*moments.eigen(), params)
        normalization = Normalization(
            dim, mean, projection, evals, np.zeros((0, projection.shape[1]), np.float32), []
        )
        normalization = replace(normalization, n_fit=moments.n)
    else:
        normalization = Normalization.identity(dim)
    bank = np.zeros((0, dim)) if bank_raw is None else bank_raw
    logger.info(
        "normalization: %d fit vectors, dim %d -> %d, bank of %d",
        moments.n,
        dim,
        normalization.output_dim,
        len(bank),
    )
    return replace(normalization, bank=normalization.apply(bank), bank_ids=sample[:n_bank])


def write_normalization(path: str | os.PathLike, normalization: Normalization) -> None:
    """Write a fitted normalization atomically (HDF5; PCA datasets only when there is a PCA)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = NORMALIZATION_FORMAT
        f.attrs["version"] = NORMALIZATION_VERSION
        f.attrs["input_dim"] = normalization.input_dim
        f.attrs["n_fit"] = normalization.n_fit
        if normalization.projection is not None:
            f.create_dataset("mean", data=normalization.mean.astype(np.float64))
            f.create_dataset("projection", data=normalization.projection.astype(np.float64))
            f.create_dataset("eigenvalues", data=normalization.eigenvalues.astype(np.float64))
        bank = normalization.bank.astype(np.float32).reshape(-1, normalization.output_dim)
        f.create_dataset("bank", data=bank)
        f.create_dataset("bank_ids", data=list(normalization.bank_ids), dtype=_STR)


def read_normalization(path: str | os.PathLike) -> Normalization:
    """Read a normalization written by :func:`write_normalization`."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != NORMALIZATION_FORMAT:
            raise ValueError(f"{path} is not a {NORMALIZATION_FORMAT} file")
        has_pca = "projection" in f
        return Normalization(
            int(f.attrs["input_dim"]),
            f["mean"][:] if has_pca else None,
            f["projection"][:] if has_pca else None,
            f["eigenvalues"][:] if has_pca else None,
            f["bank"][:].astype(np.float32),
            list(f["bank_ids"].asstr()[:]),
            int(f.attrs["n_fit"]),
        )


# --- search parameters and device ------------------------------------------------------------


@dataclass(frozen=True)
class GlobalSearchParams:
    """Parameters of the global search (the ``search`` params of the rule).

    ``normalize_scores`` off: no bank search, ``global_normalized`` equals the raw similarity.
    ``qe_k`` 0 = no αQE; otherwise each query is expanded with its first-pass top ``qe_k``
    references weighted by ``max(similarity, 0) ** qe_alpha``.
    """

    k: int = 10  # references retrieved per query
    use_gpu: str = "auto"  # auto: GPU when faiss-gpu sees one; never; always
    normalization_beta: float = 1.0  # β of similarity − β · mean(top-n bank similarities)
    normalization_neighbors: int = 10  # n: bank neighbours averaged per query
    normalize_scores: bool = True  # rank (and report) by the normalized score
    qe_alpha: float = 3.0  # αQE weight exponent
    qe_k: int = 0  # αQE neighbours; 0 = off
    candidates_per_query: int = 10  # rows kept per query (<= k)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= GPU_MAX_K:
            raise ValueError(f"k must be in [1, {GPU_MAX_K}], got {self.k}")
        if not 1 <= self.candidates_per_query <= self.k:
            raise ValueError(f"candidates_per_query must be in [1, k={self.k}]")
        if not 1 <= self.normalization_neighbors <= GPU_MAX_K:
            raise ValueError(f"normalization_neighbors must be in [1, {GPU_MAX_K}]")
        if not 0 <= self.qe_k <= GPU_MAX_K:
            raise ValueError(f"qe_k must be in [0, {GPU_MAX_K}], got {self.qe_k}")
        if self.qe_alpha < 0:
            raise ValueError(f"qe_alpha must be >= 0, got {self.qe_alpha}")
        if self.use_gpu not in _GPU_MODES:
            raise ValueError(f"use_gpu must be one of {_GPU_MODES}, got {self.use_gpu!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> GlobalSearchParams:
        """Build from a config dict; unknown keys are an error."""
        return from_config(cls, values, "global search")


# --- exact top-k within one index ------------------------------------------------------------


def _exact_ip(queries: np.ndarray, idx: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """float64 inner products of each query with the ``ref`` rows in ``idx`` (-1 gives -inf).

    An elementwise product summed over the last axis gives the same bits for a pair whatever the
    block it is in (unlike BLAS, whose summation order depends on the matrix shapes).
    """
    out = np.full(idx.shape, -np.inf)
    if idx.size == 0:
        return out
    step = max(1, EXACT_BUDGET // max(1, idx.shape[1] * ref.shape[1]))
    for start in range(0, len(idx), step):
        rows = idx[start : start + step]
        gathered = ref[np.maximum(rows, 0)].astype(np.float64)
        q = queries[start : start + step].astype(np.float64)[:, None, :]
        out[start : start + step] = np.where(rows >= 0, (q * gathered).sum(axis=-1), -np.inf)
    return out


def exact_topk(
    device: Device, queries: np.ndarray, ref: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of ``ref`` by exact inner product, ties by smaller row.

    faiss proposes, :func:`_exact_ip` rescores; rows whose faiss cut-off is within ``TIE_TOL``
    of the k-th exact score are widened (:func:`copydetect.knn.tie_safe_topk`).
    Returns ``sims`` float64 [n, k] (-inf = none) and ``rows`` int64 [n, k] (-1 = none).
    """
    searcher = device.flat_ip(ref, rescore=partial(_exact_ip, ref=ref), tolerance=TIE_TOL)
    return tie_safe_topk(searcher, queries, k, len(ref))


# --- k-NN over reference shards --------------------------------------------------------------


@dataclass
class ShardTopK:
    """Running top-k of a query batch, optionally with the vectors of its first ``g`` entries
    (gathered on the way for αQE, so no reference shard is read twice for it)."""

    sims: np.ndarray  # float64 [n, k]
    ids: np.ndarray  # str [n, k]
    shards: np.ndarray  # str [n, k]
    vectors: np.ndarray  # float32 [n, g, d]

    @classmethod
    def empty(cls, n: int, k: int, g: int, d: int) -> ShardTopK:
        none = np.full((n, k), "", dtype=str)
        return cls(np.full((n, k), -np.inf), none, none.copy(), np.zeros((n, g, d), np.float32))

    def merge(
        self, sims: np.ndarray, ids: np.ndarray, shard: str, vectors: np.ndarray
    ) -> ShardTopK:
        """Exact top-k of self and one shard's sorted top-k, ordered by (score desc, id).

        The vectors of the new first g come from the first g of either side: an entry at
        position j of a sorted side has j entries ahead of it in the merge, so rank < g ⇒ j < g.
        """
        k, g = self.sims.shape[1], self.vectors.shape[1]
        all_shards = np.concatenate([self.shards, np.where(ids != "", shard, "")], axis=1)
        top_sims, top_ids, order = merge_topk(self.sims, self.ids, sims, ids, k, descending=True)
        if g:
            source = np.concatenate([self.vectors, vectors], axis=1)
            col = order[:, :g]
            col = np.where(col < k, col, col - k + g)
            vectors = np.take_along_axis(source, col[:, :, None], 1)
        else:
            vectors = self.vectors
        return ShardTopK(top_sims, top_ids, np.take_along_axis(all_shards, order, -1), vectors)


def _shard_topk(
    path: str | os.PathLike,
    queries: np.ndarray,
    normalization: Normalization,
    k: int,
    g: int,
    device: Device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One reference shard's exact top-k (scores, ids, vectors of the first g); None if empty."""
    emb = read_embedding_shard(path)
    if not emb.ids:
        return None
    # Rows in id order: faiss' smaller-row tie rule then agrees with the global id rule.
    ids = np.array(emb.ids, dtype=str)
    order = np.argsort(ids, kind="stable")
    ids, ref = ids[order], normalization.apply(emb.vectors[order])
    del emb
    if ref.shape[1] != queries.shape[1]:
        raise ValueError(
            f"{path}: dim {ref.shape[1]} after normalization, queries {queries.shape[1]}"
        )
    sims, rows = exact_topk(device, queries, ref, k)
    found_ids = np.where(rows >= 0, ids[np.maximum(rows, 0)], "")
    return sims, found_ids, ref[np.maximum(rows[:, :g], 0)]


def knn_over_shards(
    queries: np.ndarray,
    reference_shards: Sequence[str | os.PathLike],
    normalization: Normalization,
    k: int,
    device: Device,
    gather: int = 0,
) -> ShardTopK:
    """Exact inner-product top-k of transformed queries over reference shards, one shard in
    memory at a time (each transformed by ``normalization`` when read), with the vectors of the
    first ``gather`` references. Fewer than k references leave (-inf, "", "") at a row's end."""
    top = ShardTopK.empty(len(queries), k, min(gather, k), queries.shape[1])
    if len(queries) == 0:
        return top
    for path in reference_shards:
        start = time.perf_counter()
        found = _shard_topk(path, queries, normalization, k, top.vectors.shape[1], device)
        if found is not None:
            top = top.merge(found[0], found[1], Path(path).stem, found[2])
        logger.info("%s: searched in %.2f s", path, time.perf_counter() - start)
    return top


# --- αQE / DBA and score normalization --------------------------------------------------------


def alpha_expansion(
    vectors: np.ndarray,
    neighbor_vectors: np.ndarray,
    neighbor_sims: np.ndarray,
    k: int,
    alpha: float,
) -> np.ndarray:
    """``L2(v + Σ_{i<k} max(s_i, 0)^α · n_i)`` per row (αQE of Radenović et al.).

    ``neighbor_vectors`` [n, m, d] and ``neighbor_sims`` [n, m] are sorted best first; missing
    neighbours (-inf similarity) weigh nothing. Negative similarities are clipped to 0 so a
    fractional α stays real. k = 0 leaves the vectors unchanged (up to L2).
    """
    k = min(k, neighbor_sims.shape[1])
    sims = np.asarray(neighbor_sims[:, :k], dtype=np.float64)
    valid = np.isfinite(sims)
    weights = np.where(valid, np.maximum(np.where(valid, sims, 0.0), 0.0) ** alpha, 0.0)
    expanded = np.asarray(vectors, dtype=np.float64) + np.einsum(
        "nk,nkd->nd", weights, np.asarray(neighbor_vectors[:, :k], dtype=np.float64)
    )
    return l2_normalize(expanded).astype(np.float32)


def dba_vectors(
    reference_vectors: np.ndarray,
    neighbor_vectors: np.ndarray,
    neighbor_sims: np.ndarray,
    k: int,
    alpha: float,
) -> np.ndarray:
    """Database-side augmentation: each reference replaced by the α-weighted sum of itself and
    its top-k reference neighbours (which must not include the reference itself: it already
    counts with weight 1). Same formula as :func:`alpha_expansion`."""
    return alpha_expansion(reference_vectors, neighbor_vectors, neighbor_sims, k, alpha)


def bank_similarity(queries: np.ndarray, bank: np.ndarray, n: int, device: Device) -> np.ndarray:
    """float64 [nq]: mean of each (transformed) query's top-n similarities to the bank (all of
    the bank when it has fewer than n vectors; 0 when it is empty)."""
    if len(bank) == 0:
        logger.warning("empty normalization bank: scores are not normalized")
        return np.zeros(len(queries))
    if len(queries) == 0:
        return np.zeros(0)
    sims, _ = exact_topk(device, queries, bank, min(n, len(bank)))
    return sims.mean(axis=1)


def normalize_similarities(
    similarities: np.ndarray, bank_sims: np.ndarray, beta: float
) -> np.ndarray:
    """SSCD / isc2021 score normalization: ``similarity − β · bank similarity`` of the query."""
    return np.asarray(similarities, np.float64) - beta * np.asarray(bank_sims, np.float64)[:, None]


# --- candidates --------------------------------------------------------------------------------


def _candidate_table(
    query_ids: Sequence[str], top: ShardTopK, bank_sims: np.ndarray, params: GlobalSearchParams
) -> pd.DataFrame:
    """Rows of found references with raw and normalized scores, top per query by the ranking
    score (normalized when ``normalize_scores``), ties by reference id."""
    sims = top.sims.astype(np.float32).astype(np.float64)  # the reported similarity, float32
    normalized = normalize_similarities(sims, bank_sims, params.normalization_beta)
    valid = top.ids != ""
    rows = np.nonzero(valid)[0]
    table = pd.DataFrame(
        {
            "query_id": np.array(query_ids, dtype=object)[rows],
            "reference_id": top.ids[valid].astype(object),
            "reference_shard": top.shards[valid].astype(object),
            "global_similarity": sims[valid],
            "global_normalized": normalized[valid] if params.normalize_scores else sims[valid],
        }
    )
    score = "global_normalized" if params.normalize_scores else "global_similarity"
    table = table.sort_values(
        ["query_id", score, "reference_id"], ascending=[True, False, True], kind="stable"
    )
    table = table.groupby("query_id", sort=False).head(params.candidates_per_query)
    table["global_rank"] = table.groupby("query_id", sort=False).cumcount().astype(np.int64) + 1
    if table.duplicated(["query_id", "reference_id"]).any():
        raise ValueError("a reference id is in two reference shards (or a query id repeats)")
    return table[CANDIDATE_COLUMNS].reset_index(drop=True)


def global_candidates(
    queries: Embeddings,
    reference_shards: Sequence[str | os.PathLike],
    normalization: Normalization,
    params: GlobalSearchParams,
) -> pd.DataFrame:
    """Candidates of one query shard (raw embeddings): normalize, optional αQE, k-NN over the
    reference shards, score normalization against the bank of the final query vectors."""
    device = Device.choose(params.use_gpu)
    x = normalization.apply(queries.vectors)
    if params.qe_k:
        first = knn_over_shards(
            x, reference_shards, normalization, max(params.k, params.qe_k), device, params.qe_k
        )
        x = alpha_expansion(x, first.vectors, first.sims, params.qe_k, params.qe_alpha)
        del first
    top = knn_over_shards(x, reference_shards, normalization, params.k, device)
    if params.normalize_scores:
        bank_sims = bank_similarity(x, normalization.bank, params.normalization_neighbors, device)
    else:
        bank_sims = np.zeros(len(x))
    return _candidate_table(queries.ids, top, bank_sims, params)


def augment_references(
    shard: Embeddings,
    reference_shards: Sequence[str | os.PathLike],
    k: int,
    alpha: float,
    use_gpu: str = "auto",
) -> np.ndarray:
    """DBA of one shard of (projected) reference vectors over all reference shards.

    Each reference becomes ``L2(r + Σ_{i<k} s_i^α · n_i)`` over its top-k *other* references,
    so near-duplicate references pull together and a copy of any of them scores higher. One
    reference shard in memory at a time, as in the search.
    """
    vectors = np.asarray(shard.vectors, dtype=np.float32)
    if k == 0 or len(vectors) == 0:
        return l2_normalize(vectors).astype(np.float32)
    identity = Normalization.identity(vectors.shape[1])
    top = knn_over_shards(vectors, reference_shards, identity, k + 1, Device.choose(use_gpu), k + 1)
    # Each reference finds itself; move that entry last (stable) and keep the first k others.
    is_self = top.ids == np.asarray(shard.ids, dtype=object)[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    sims = np.take_along_axis(top.sims, order, axis=1)
    neighbors = np.take_along_axis(top.vectors, order[:, :, None], axis=1)
    return dba_vectors(vectors, neighbors, sims, k, alpha)
