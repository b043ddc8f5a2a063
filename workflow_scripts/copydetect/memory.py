"""Peak memory of a job's process, as the rule scripts log it (bounded memory is a promise)."""

from __future__ import annotations

import ctypes
import resource
from pathlib import Path


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB.

    Prefers Linux's VmHWM: ``ru_maxrss`` also counts the parent's resident size at fork/exec
    (Linux carries it over exec), which would charge a big Snakemake parent to the job.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# glibc mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold_mib: int = 32, trim_threshold_mib: int = 128) -> bool:
    """Let glibc's malloc reuse freed memory instead of returning it to the kernel at once.

    By default a block over 128 KiB (the threshold adapts, but not to a mix of sizes) is a
    fresh mmap and goes back to the kernel when freed, so a loop that allocates and frees
    image-sized buffers touches new pages every time: OpenCV SIFT spent ~30% of its CPU
    seconds in the kernel on page faults (450k minor faults per 100 images). Blocks up to
    ``mmap_threshold_mib`` (glibc's maximum is 32 MiB on 64-bit) then come from the heap, and
    up to ``trim_threshold_mib`` of free heap top is kept. Results do not change; peak memory
    grows by at most about the trim threshold. Returns False where there is no glibc mallopt
    (macOS, musl): nothing is changed there.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt ignores these
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, mmap_threshold_mib << 20)
        and mallopt(_M_TRIM_THRESHOLD, trim_threshold_mib << 20)
    )
