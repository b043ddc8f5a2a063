"""Atomic file output: a killed job must never leave a file that a rerun would trust."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``path`` only if the block succeeds.

    The temporary name lives in the same directory so ``os.replace`` is an atomic rename on
    POSIX file systems. On any exception the partial file is removed and the error re-raised.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
