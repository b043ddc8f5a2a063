"""Peak memory of a job's process, as the rule scripts log it (bounded memory is a promise)."""

from __future__ import annotations

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
