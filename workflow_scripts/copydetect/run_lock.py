"""Resume after ``kill -9`` with the same command, and never two live runs in one folder.

Snakemake marks a running folder with lock files under ``.snakemake/locks/`` and deletes them
when it exits; a killed Snakemake leaves them behind, and every later run stops with a
``LockException`` until ``--unlock``. Whether those files belong to a live run cannot be told
from the files. So every run of this workflow also holds a kernel lock (``flock``) on
``.snakemake/copydetect-run.lock`` for as long as its process lives: the kernel drops it when
the process dies, however it dies. A process that gets that lock knows no other run of the
workflow is alive in the folder, so the Snakemake locks it finds are stale and can go.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from copydetect.flock import try_flock

logger = logging.getLogger(__name__)

RUN_LOCK = "copydetect-run.lock"
# Descriptors of the run lock held by this process: never closed, so the lock lives exactly as
# long as the process (os.open makes them non-inheritable: jobs started by the run do not keep
# it alive after the run dies).
_HELD: dict[str, int] = {}


class LiveRunError(RuntimeError):
    """Another live run of the workflow holds the folder."""


@dataclass(frozen=True)
class RunLock:
    """Outcome of taking the run lock: whether this process holds it, and the stale Snakemake
    lock files it removed (only ever removed while holding it)."""

    held: bool
    removed: tuple[str, ...] = ()
    holder: str = ""  # what the live holder wrote into the lock file (its pid), when not held


def _try_flock(path: Path) -> int | None:
    fd = try_flock(path, writable=True, mode=0o644)
    if fd is not None:  # who holds it, for the message of a run that finds it taken
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
    return fd


def take_run_lock(
    state_dir: str | os.PathLike = ".snakemake", remove_stale: bool = True
) -> RunLock:
    """Hold the run lock of the folder whose Snakemake state is ``state_dir`` (idempotent) and,
    with ``remove_stale``, remove the Snakemake locks a dead run left there. Returns
    ``held=False`` when a live run of the workflow holds it (its locks are then left alone)."""
    state = Path(state_dir)
    path = state / RUN_LOCK
    if str(path.resolve()) in _HELD:
        return RunLock(held=True)
    state.mkdir(parents=True, exist_ok=True)
    fd = _try_flock(path)
    if fd is None:
        return RunLock(held=False, holder=path.read_text(errors="replace").strip())
    _HELD[str(path.resolve())] = fd
    if not remove_stale:
        return RunLock(held=True)
    removed = []
    for lock in sorted((state / "locks").glob("*.lock")):
        lock.unlink(missing_ok=True)
        removed.append(str(lock))
    if removed:
        logger.warning(
            "removed %d lock file(s) left by a run that is no longer alive", len(removed)
        )
    return RunLock(held=True, removed=tuple(removed))


def require_run_lock(state_dir: str | os.PathLike = ".snakemake") -> None:
    """Before any job starts: hold the run lock or stop, so two live runs never share a folder
    (Snakemake's own lock files alone can be written by both of two runs started at once)."""
    # No removal here: by now this run has written its own Snakemake locks.
    outcome = take_run_lock(state_dir, remove_stale=False)
    if not outcome.held:
        raise LiveRunError(
            f"another run of this workflow is alive in {Path.cwd()} ({outcome.holder}); "
            "wait for it to finish, or stop it, then run the same command again"
        )
