"""Thread pools of native libraries: OpenBLAS at one thread where processes are the parallelism."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from copydetect import verify
from copydetect.threads import loaded_blas_pools, set_blas_threads, single_blas_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps")


def test_numpy_and_opencv_blas_pools_are_found() -> None:
    np.ones((64, 64), np.float32) @ np.ones((64, 64), np.float32)
    cv2.gemm(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32), 1.0, None, 0.0)
    names = " ".join(pool.path for pool in loaded_blas_pools())
    assert "scipy_openblas" in names or "numpy" in names  # numpy's own build
    assert len(loaded_blas_pools()) >= 1


def test_single_blas_thread_sets_one_and_restores_the_counts() -> None:
    pools = loaded_blas_pools()
    before = [pool.get_threads() for pool in pools]
    with single_blas_thread():
        assert [pool.get_threads() for pool in pools] == [1] * len(pools)
    assert [pool.get_threads() for pool in pools] == before


def test_a_verify_worker_runs_blas_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    counts: list[int] = []
    monkeypatch.setattr(
        verify, "set_blas_threads", lambda n: counts.append(n) or set_blas_threads(n)
    )
    pools = loaded_blas_pools()
    before = [pool.get_threads() for pool in pools]
    try:
        verify._init_worker()
        assert counts == [1]
        assert [pool.get_threads() for pool in pools] == [1] * len(pools)
    finally:
        for pool, n in zip(pools, before, strict=True):
            pool.set_threads(n)
