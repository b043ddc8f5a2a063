"""Embedding normalization: PCA (+ whitening) and L2, its fit on the training embeddings, its
HDF5 file format, and the bank of transformed training vectors that global search normalizes
scores against.

The fit reads the shards one at a time (memory: one shard + d² + the bank) and picks its sample
by seeded id hashes, so it does not depend on the shard split or order.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import h5py
import numpy as np

from copydetect.atomic import atomic_path
from copydetect.params import config_params
from copydetect.shards import STRING, read_embedding_shard, read_shard_ids
from copydetect.vectors import l2_normalize

logger = logging.getLogger(__name__)

NORMALIZATION_FORMAT = "copydetect-normalization"
NORMALIZATION_VERSION = 1


# --- normalization: PCA / whitening + L2, and the score-normalization bank -------------------


@config_params("global.normalization")
class NormalizationParams:
    """How the embedding normalization is fitted (the ``global.normalization`` section).

    ``pca_dim`` None = no PCA (L2 only); it is capped at the input dimension. The whitening
    divides by ``sqrt(max(eigenvalue, eigenvalue_floor · largest eigenvalue))``: the floor keeps
    near-empty directions (fewer samples than dimensions, float16 noise) from being blown up.
    """

    pca_dim: int | None
    whiten: bool
    bank_size: int  # transformed training vectors kept for score normalization
    seed: int  # salt of the id hash that picks the fit sample and the bank
    max_fit_vectors: int  # training vectors the PCA sees at most
    eigenvalue_floor: float  # relative to the largest eigenvalue

    @property
    def uses_pca(self) -> bool:
        return bool(self.pca_dim)


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
        empty = ~x.any(axis=1)
        if self.projection is not None:
            x = (x - self.mean) @ self.projection
        # An all-zero vector is "no evidence" (VLAD of a featureless image): centring would
        # turn every such row into the same −mean direction, i.e. make them all alike.
        x[empty] = 0.0
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

    While fewer rows than dimensions have been added, only the shifted rows are kept (less
    memory than the d × d sums): with n < d the eigenvectors come from the n × n Gram matrix,
    seconds instead of minutes for 8192-d VLAD and a small training set, and the d × d sums
    (512 MiB at 8192-d, 3 of a small run's CPU seconds) are never made.
    """

    def __init__(self) -> None:
        self.n, self.shift, self.s1 = 0, None, None
        self.s2: np.ndarray | None = None  # made once the rows reach the dimension
        self.rows: list[np.ndarray] | None = []

    def add(self, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        x = np.asarray(x, dtype=np.float64)
        if self.shift is None:
            self.shift = x.mean(axis=0)
            self.s1 = np.zeros(x.shape[1])
        y = x - self.shift
        self.n, self.s1 = self.n + len(x), self.s1 + y.sum(axis=0)
        if self.rows is not None:
            self.rows.append(y)
            if self.n < x.shape[1]:
                return
            y, self.rows = np.concatenate(self.rows), None
            self.s2 = np.zeros((x.shape[1], x.shape[1]))
        self.s2 += y.T @ y

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        m = self.s1 / self.n
        if self.s2 is None:  # still the rows
            y = np.concatenate(self.rows)
            return self.shift + m, y.T @ y / self.n - np.outer(m, m)
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
        # Zero vectors carry no evidence (apply keeps them zero): they do not shape the PCA.
        moments.add(emb.vectors[(ranks >= 0) & (ranks < n_fit) & emb.vectors.any(axis=1)])
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
        f.create_dataset("bank_ids", data=list(normalization.bank_ids), dtype=STRING)


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
