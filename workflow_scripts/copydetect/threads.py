"""Thread pools of native libraries (OpenCV, faiss): jobs and processes are the parallelism."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


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
