"""The start of every rule script: ``job = start(snakemake)``, then the script's own work.

``start`` sends the job's stdout and stderr to its log file, sets the one log format and, when
the rule declares ``resources: gpu``, leases that many devices for the job's whole life (see
``copydetect.gpu``).

Why each script does its work in a ``main()`` that imports the heavy modules itself, called
after ``start``: the lease sets ``CUDA_VISIBLE_DEVICES``, which CUDA reads once, when it
initialises, and whether an import initialises it is up to each library and version
(``torch.cuda.is_available()`` does, and ultralytics may call it at import). Rather than rely on
that, a script's module level imports only the standard library and this module (itself only
the standard library and ``copydetect.gpu``), so nothing can touch CUDA before the lease, and an
import error lands in the job's log instead of the terminal. ``tests/test_rule_script.py``
checks this for every script.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import resource
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from copydetect.gpu import GpuLease, GpuLeaseError, acquire_for_job
from copydetect.memory import peak_rss_mib

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The last line of every job's log: its CPU seconds (benchmarks/baseline_imgfp.py sums them per
# rule). getrusage at exit counts the whole process, interpreter start-up and imports included,
# and its reaped children (worker pools); Snakemake's benchmark files sample the process tree
# and miss what ran between samples.
CPU_LINE = "job CPU seconds: %.3f user, %.3f system, peak RSS %.1f MiB"


@dataclass(frozen=True)
class RuleJob:
    """What a started job holds: its GPU lease (empty on the CPU)."""

    lease: GpuLease

    @property
    def on_gpu(self) -> bool:
        """Whether the job holds a device (it may still run on the CPU if CUDA is missing)."""
        return bool(self.lease.devices)


def start(snakemake: Any, device: str | None = None) -> RuleJob:
    """Start a rule script's job: log redirect, log format, then the GPU lease.

    ``device`` is the device setting of a job that has one (a model's or the detector's): a job
    told to run on ``"cpu"`` takes no lease, so it never holds a GPU another job could use. The
    lease is ``resources.gpu`` devices (none when the rule declares no gpu), with the lock files
    in ``params.gpu_lock_dir``, which every GPU rule declares.
    """
    redirect_output(snakemake.log[0])
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)
    logging.captureWarnings(True)  # library warnings (Pillow, torch) become log lines too
    # atexit runs before logging's own shutdown hook (registered earlier, at its import).
    atexit.register(log_cpu_usage, sys.stderr)
    gpus = 0 if device == "cpu" else int(snakemake.resources.get("gpu", 0))
    return RuleJob(lease=lease_devices(gpus, snakemake.params.gpu_lock_dir) if gpus else GpuLease())


def redirect_output(log_path: str) -> None:
    """Send stderr and stdout (libraries such as ultralytics print progress there) to the log."""
    sys.stderr = open(log_path, "w")  # noqa: SIM115 - the log lives as long as the job
    sys.stdout = sys.stderr


def log_cpu_usage(log: Any) -> None:
    """Log the job's CPU seconds (this process and its reaped children) while ``log``, the job's
    log stream, is still open (a test closes it before the interpreter exits)."""
    if log.closed or sys.stderr is not log:
        return
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_mib = max(peak_rss_mib(), children.ru_maxrss / 1024)  # ru_maxrss: KiB on Linux
    logging.info(
        CPU_LINE,
        own.ru_utime + children.ru_utime,
        own.ru_stime + children.ru_stime,
        peak_mib,
    )


def lease_devices(n: int, lock_dir: str) -> GpuLease:
    """Lease ``n`` GPUs until the process exits; a lease that cannot be had ends the job."""
    with exit_cleanly_on(GpuLeaseError):
        lease = acquire_for_job(n, lock_dir)
    if lease.devices:
        # The lease's end, for benchmarks/gpu_check.py: jobs whose start..end overlap must hold
        # disjoint devices. atexit runs before logging's own shutdown hook (registered earlier).
        atexit.register(logging.info, "releasing GPU(s) %s", ",".join(lease.devices))
    return lease


@contextlib.contextmanager
def exit_cleanly_on(*errors: type[Exception]) -> Iterator[None]:
    """End the job on the errors it expects (bad settings, a missing file, no free GPU) with one
    log line and exit status 1: their message names the key or file, a traceback adds nothing."""
    try:
        yield
    except errors as exc:
        logging.error("%s", exc)
        raise SystemExit(1) from None
