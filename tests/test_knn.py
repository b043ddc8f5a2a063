"""The exact top-k engine: ties at the k boundary, widening, rescoring, merges of shards."""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pytest

from copydetect.knn import Device, Searcher, merge_topk, tie_safe_topk

HAS_GPU = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def sort_keys(query: np.ndarray, ref: np.ndarray, ip: bool) -> np.ndarray:
    """Exact int64 squared L2 distances, or negated inner products (smaller first)."""
    q, r = query.astype(np.int64), ref.astype(np.int64)
    return -(q @ r.T) if ip else ((q[:, None, :] - r[None]) ** 2).sum(-1)


class _WrongTieOrder:
    """A fake index that cuts ties the wrong way (largest row first), like a GPU k-select may,
    and records the widths it was asked for. ``ip`` scores by inner product (larger first)."""

    def __init__(self, ref: np.ndarray, ip: bool = False) -> None:
        self.ref, self.ip, self.widths = ref.astype(np.int64), ip, []

    def search(self, x: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        self.widths.append(width)
        key = sort_keys(x, self.ref, self.ip)
        wrong = -np.arange(len(self.ref))[None].repeat(len(x), 0)
        order = np.lexsort((wrong, key), axis=-1)[:, :width]
        found = np.take_along_axis(key, order, -1)
        return (-found if self.ip else found).astype(np.float32), order


def oracle(query: np.ndarray, ref: np.ndarray, k: int, ip: bool = False) -> tuple[np.ndarray, ...]:
    """Exact top-k in int64 with ties by smaller row, padded with (±inf, -1)."""
    key = sort_keys(query, ref, ip)
    order = np.lexsort((np.broadcast_to(np.arange(len(ref)), key.shape), key), axis=-1)[:, :k]
    found = np.take_along_axis(key, order, -1).astype(np.float64)
    pad = ((0, 0), (0, k - order.shape[1]))
    found = np.pad(-found if ip else found, pad, constant_values=-np.inf if ip else np.inf)
    return found, np.pad(order, pad, constant_values=-1)


def tied_data(seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 8, (200, 16))
    ref[100:140] = ref[3]  # 41 identical rows: the tie needs several widenings
    ref[160:180] = ref[160]  # 20 more for inner products (the largest row wins there)
    return ref, ref[[3, 7, 50, 120]]


@pytest.mark.parametrize("ip", [False, True])
def test_ties_at_the_kth_place_are_widened_until_seen_whole(ip: bool) -> None:
    ref, query = tied_data()
    index = _WrongTieOrder(ref, ip)
    scores, rows = tie_safe_topk(Searcher(index, descending=ip), query, 3, len(ref))
    want_s, want_r = oracle(query, ref, 3, ip)
    np.testing.assert_array_equal(rows, want_r)
    np.testing.assert_array_equal(scores, want_s)
    assert scores.dtype == np.float32 and rows.dtype == np.int64
    if not ip:  # a row's own copies are its nearest: the tie is cut at the k-th place
        assert rows[0].tolist() == [3, 100, 101] and rows[3].tolist() == [3, 100, 101]
        assert index.widths == [4, 16, 64]  # k + 1, then 4× while the tie is cut


def test_untied_rows_are_searched_once() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(50, 8))
    index = _WrongTieOrder((ref * 1000).round())
    scores, rows = tie_safe_topk(Searcher(index), (ref[:5] * 1000).round(), 2, len(ref))
    assert index.widths == [3] and rows[:, 0].tolist() == list(range(5))


@pytest.mark.parametrize("k", [5, 9])
def test_k_above_the_number_of_rows_is_padded(k: int) -> None:
    ref, query = tied_data()
    ref = ref[:4]
    for ip in (False, True):
        scores, rows = tie_safe_topk(Searcher(_WrongTieOrder(ref, ip), descending=ip), query, k, 4)
        want_s, want_r = oracle(query, ref, k, ip)
        np.testing.assert_array_equal(rows, want_r)
        np.testing.assert_array_equal(scores, want_s)
        assert (rows[:, 4:] == -1).all() and np.isinf(scores[:, 4:]).all()


def test_no_rows_or_no_queries() -> None:
    ref, query = tied_data()
    scores, rows = tie_safe_topk(Searcher(_WrongTieOrder(ref[:0])), query, 2, 0)
    assert np.isposinf(scores).all() and (rows == -1).all() and rows.shape == (4, 2)
    scores, rows = tie_safe_topk(Searcher(_WrongTieOrder(ref)), query[:0], 2, len(ref))
    assert scores.shape == rows.shape == (0, 2)


def test_width_limit_keeps_faiss_choice_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    ref, query = tied_data()
    with caplog.at_level(logging.WARNING, logger="copydetect.knn"):
        _, rows = tie_safe_topk(Searcher(_WrongTieOrder(ref), max_k=8), query[:1], 3, len(ref))
    assert "tied beyond width 8" in caplog.text
    assert rows[0].tolist() == [132, 133, 134]  # faiss' wrong cut of the 41-way tie is kept


def test_rescore_within_tolerance_recovers_the_exact_order() -> None:
    """faiss' float32 scores may swap near-equal rows; exact rescoring plus widening within the
    tolerance gives the exact top-k, ties by row."""
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(300, 8))
    ref = (ref / np.linalg.norm(ref, axis=1, keepdims=True)).astype(np.float32).astype(np.float64)
    ref[200] = ref[10]  # an exact tie
    ref[201] = ref[11] * (1 + 1e-9)  # a near tie that float32 cannot order
    query = ref[[10, 11, 12]]

    class Noisy:
        def search(self, x: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
            sims = x.astype(np.float64) @ ref.T + rng.uniform(-1e-6, 1e-6, (len(x), len(ref)))
            order = np.argsort(-sims, axis=1, kind="stable")[:, :width]
            return np.take_along_axis(sims, order, 1).astype(np.float32), order

    def exact(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return np.where(
            rows >= 0, np.einsum("nd,nkd->nk", x.astype(np.float64), ref[rows]), -np.inf
        )

    searcher = Searcher(Noisy(), descending=True, rescore=exact, tolerance=1e-4)
    sims, rows = tie_safe_topk(searcher, query, 2, len(ref))
    full = query @ ref.T
    want = np.lexsort((np.broadcast_to(np.arange(len(ref)), full.shape), -full), axis=-1)[:, :2]
    np.testing.assert_array_equal(rows, want)
    assert sims.dtype == np.float64
    np.testing.assert_allclose(sims, np.take_along_axis(full, want, 1), rtol=0, atol=1e-12)
    assert rows[0].tolist() == [10, 200]


# --- merges -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ip", [False, True])
@pytest.mark.parametrize("k", [1, 3, 12])
def test_merge_of_shards_equals_search_of_the_union(k: int, ip: bool) -> None:
    rng = np.random.default_rng(k)
    ref = rng.integers(0, 4, (60, 6))  # small values: many cross-shard ties
    query = rng.integers(0, 4, (9, 6))
    shard_of = rng.integers(0, 4, len(ref))  # shard 3 may be empty; force one empty shard too
    shard_of[shard_of == 2] = 1
    fill = -np.inf if ip else np.inf
    scores, keys = np.full((len(query), 0), fill), np.full((len(query), 0), -1)
    for shard in range(4):
        rows = np.flatnonzero(shard_of == shard)
        searcher = Searcher(_WrongTieOrder(ref[rows], ip), descending=ip)
        s, r = tie_safe_topk(searcher, query, k, len(rows))
        global_rows = np.where(r >= 0, np.append(rows, -1)[r], -1)
        scores, keys, _ = merge_topk(scores, keys, s.astype(np.float64), global_rows, k, ip)
    want_s, want_r = oracle(query, ref, k, ip)
    np.testing.assert_array_equal(keys, want_r)
    np.testing.assert_array_equal(scores, want_s)


def test_merge_breaks_ties_by_key_pads_and_reports_columns() -> None:
    inf = np.inf
    d_a, i_a = np.array([[1.0, 5.0]], np.float32), np.array([[9, 4]])
    d_b, i_b = np.array([[1.0, inf]], np.float32), np.array([[2, -1]])
    dist, idx, order = merge_topk(d_a, i_a, d_b, i_b, 3)
    assert idx.tolist() == [[2, 9, 4]] and dist.tolist() == [[1.0, 1.0, 5.0]]
    assert order.tolist() == [[2, 0, 1]] and dist.dtype == np.float32
    dist, idx, order = merge_topk(d_b[:, :1], i_b[:, :1], d_b[:, :0], i_b[:, :0], 3)
    assert idx.tolist() == [[2, -1, -1]] and np.isinf(dist[0, 1:]).all()
    assert order.tolist() == [[0, -1, -1]]


def test_merge_of_similarities_with_string_keys() -> None:
    sims_a, ids_a = np.array([[0.9, 0.5]]), np.array([["R7", "R2"]])
    sims_b, ids_b = np.array([[0.9, -np.inf]]), np.array([["R3", ""]])
    sims, ids, order = merge_topk(sims_a, ids_a, sims_b, ids_b, 4, descending=True)
    assert ids.tolist() == [["R3", "R7", "R2", ""]]
    assert sims.tolist() == [[0.9, 0.9, 0.5, -np.inf]]
    assert order[0, :3].tolist() == [2, 0, 1]


# --- devices ------------------------------------------------------------------------------------


def test_device_choice() -> None:
    with pytest.raises(ValueError, match="local.use_gpu must be one of"):
        Device.choose("sometimes", "local.use_gpu")
    assert not Device.choose("never").is_gpu
    if not HAS_GPU:
        assert not Device.choose("auto").is_gpu
        with pytest.raises(RuntimeError, match="'always' but faiss sees no GPU"):
            Device.choose("always")


@pytest.mark.parametrize("use_gpu", ["never", "always"])
def test_flat_ip_searcher_is_exact_with_ties(use_gpu: str) -> None:
    if use_gpu == "always" and not HAS_GPU:
        pytest.skip("needs faiss-gpu and a GPU")
    ref, query = tied_data()
    searcher = Device.choose(use_gpu).flat_ip(ref.astype(np.float32))
    sims, rows = tie_safe_topk(searcher, query, 3, len(ref))
    want_s, want_r = oracle(query, ref, 3, ip=True)
    np.testing.assert_array_equal(rows, want_r)
    np.testing.assert_array_equal(sims, want_s)
