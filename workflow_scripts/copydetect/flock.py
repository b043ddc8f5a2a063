"""Non-blocking kernel file locks (``flock``): held by an open descriptor, dropped by the kernel
when the process that holds it dies, however it dies (GPU leases, the run lock)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def try_flock(path: str | os.PathLike, writable: bool = False, mode: int = 0o666) -> int | None:
    """An open descriptor holding ``path``'s exclusive flock (the file is created if needed),
    or None when another process holds it. Read-only suffices for flock and still works on a
    file another user created; ``writable`` for a holder that writes who it is into the file."""
    fd = os.open(Path(path), (os.O_RDWR if writable else os.O_RDONLY) | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd
