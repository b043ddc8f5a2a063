"""Thread pools of native libraries (OpenCV, faiss, OpenBLAS): jobs and processes are the
parallelism."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# The OpenBLAS builds a job may load, each with its own thread pool (one thread per core by
# default, whatever else runs): numpy's scipy-openblas (prefixed symbols), OpenCV's (behind
# cv2.gemm) and faiss-cpu's (plain ``openblas_*``). cv2.setNumThreads does not reach them.
_BLAS_SYMBOLS = (
    ("openblas_get_num_threads", "openblas_set_num_threads"),
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
)


@contextlib.contextmanager
def single_thread(
    get_threads: Callable[[], int], set_threads: Callable[[int], None]
) -> Iterator[None]:
    """Run the block with a library at one thread (``cv2.getNumThreads, cv2.setNumThreads`` or
    ``faiss.omp_get_max_threads, faiss.omp_set_num_threads``), restoring its count after."""
    previous = get_threads()
    set_threads(1)
    try:
        yield
    finally:
        set_threads(previous)


@dataclass(frozen=True)
class BlasPool:
    """The thread-count getter and setter of one loaded OpenBLAS library."""

    path: str
    get_threads: Callable[[], int]
    set_threads: Callable[[int], None]


def loaded_blas_pools() -> list[BlasPool]:
    """The OpenBLAS libraries this process has loaded (from /proc/self/maps; none where that
    does not exist), each with its thread-count functions."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return []
    paths = sorted(
        {line.split()[-1] for line in maps.read_text().splitlines() if "openblas" in line}
    )
    pools = []
    for path in paths:
        try:
            library = ctypes.CDLL(path)  # already loaded: the same handle, nothing runs
        except OSError:
            continue
        for getter, setter in _BLAS_SYMBOLS:
            if hasattr(library, getter) and hasattr(library, setter):
                get, put = getattr(library, getter), getattr(library, setter)
                get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                pools.append(BlasPool(path, get, put))
                break
    return pools


def set_blas_threads(n: int) -> int:
    """Set every loaded OpenBLAS to ``n`` threads; returns how many libraries were set."""
    pools = loaded_blas_pools()
    for pool in pools:
        pool.set_threads(n)
    return len(pools)


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run the block with every loaded OpenBLAS at one thread, restoring their counts after.

    For work whose parallelism is processes (verification's pool): a BLAS pool of one thread
    per core in each process would oversubscribe the cores, and OpenBLAS threads that wait spin.
    """
    with contextlib.ExitStack() as stack:
        for pool in loaded_blas_pools():
            stack.enter_context(single_thread(pool.get_threads, pool.set_threads))
        yield
