"""Atomic output of files and folders: a killed job must never leave one that a rerun would
trust. Scratch folders live next to the outputs, so publishing is a rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
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


@contextlib.contextmanager
def scratch_dir(parent: str | os.PathLike, prefix: str) -> Iterator[Path]:
    """A fresh folder inside ``parent`` (same file system as the outputs), removed afterwards."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder path next to ``path`` (not yet created); if the block succeeds the
    staged folder replaces ``path`` by renames only, else it is removed."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        yield stage
        publish_directory(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish_directory(stage: Path, final: Path) -> None:
    """Move a finished folder onto ``final`` (replacing an old one) with renames only."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(stage, final)
    shutil.rmtree(old, ignore_errors=True)


def publish_entries(stage: Path, out_dir: Path, names: Sequence[str]) -> None:
    """Replace the entries ``names`` of ``out_dir`` (and only those) with the staged ones; an
    entry missing from the stage is removed, so stale files of an earlier run never survive."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        if (stage / name).exists():
            os.replace(stage / name, target)
