"""Global-descriptor search (SSCD / isc2021 baseline style): normalize, k-NN, normalize scores.

Pipeline for one query shard:

1. :class:`~copydetect.normalization.Normalization` (fitted once on the training set, or a
   sample of the references when there is none): PCA with whitening, then L2, applied to
   queries and references alike.
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

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from copydetect.knn import GPU_MAX_K, Device, merge_topk, tie_safe_topk
from copydetect.normalization import Normalization
from copydetect.params import config_params
from copydetect.progress import Progress
from copydetect.shards import Embeddings, read_embedding_shard
from copydetect.vectors import l2_normalize

logger = logging.getLogger(__name__)

# Bound on |faiss float32 inner product − exact| for unit vectors (float32 sums of ≤ a few
# thousand terms are off by ~1e-6); a cut-off closer than this to the k-th score is widened.
TIE_TOL = 1e-4
EXACT_BUDGET = 1 << 23  # gathered float64 elements per exact rescoring block (64 MiB)
CANDIDATE_COLUMNS = [
    "query_id",
    "reference_id",
    "reference_shard",
    "global_similarity",
    "global_normalized",
    "global_rank",
]


# --- search parameters and device ------------------------------------------------------------


@config_params("global.search")
class GlobalSearchParams:
    """Parameters of the global search (the ``global.search`` section).

    ``normalize_scores`` off: no bank search, ``global_normalized`` equals the raw similarity.
    ``qe_k`` 0 = no αQE; otherwise each query is expanded with its first-pass top ``qe_k``
    references weighted by ``max(similarity, 0) ** qe_alpha``.
    """

    k: int  # references retrieved per query
    use_gpu: str  # auto: GPU when faiss-gpu sees one; never; always
    normalize_scores: bool  # rank (and report) by the normalized score
    normalization_beta: float  # β of similarity − β · mean(top-n bank similarities)
    normalization_neighbors: int  # n: bank neighbours averaged per query
    qe_k: int  # αQE neighbours; 0 = off
    qe_alpha: float  # αQE weight exponent
    candidates_per_query: int  # rows kept per query (<= k)

    def __post_init__(self) -> None:
        # What the schema cannot say: relations to k and to faiss' GPU limit.
        if self.k > GPU_MAX_K or self.normalization_neighbors > GPU_MAX_K or self.qe_k > GPU_MAX_K:
            raise ValueError(f"k, normalization_neighbors and qe_k must be <= {GPU_MAX_K}")
        if self.candidates_per_query > self.k:
            raise ValueError(f"candidates_per_query must be in [1, k={self.k}]")


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
    progress = Progress(len(reference_shards), "reference shards", log=logger)
    for path in reference_shards:
        start = time.perf_counter()
        found = _shard_topk(path, queries, normalization, k, top.vectors.shape[1], device)
        if found is not None:
            top = top.merge(found[0], found[1], Path(path).stem, found[2])
        logger.info("%s: searched in %.2f s", path, time.perf_counter() - start)
        progress.advance()
    progress.done()
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
    # Featureless queries (all-zero vectors) are not searched: no evidence, and every
    # reference would tie with them. A featureless reference scores 0 with every query, so it
    # never looks like a copy either (before the zero rule, such images all shared one vector).
    searched = x.any(axis=1)
    query_ids = [i for i, keep in zip(queries.ids, searched, strict=True) if keep]
    x = x[searched]
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
    return _candidate_table(query_ids, top, bank_sims, params)


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
