"""Per-job GPU leases: each concurrently running GPU job gets its own device.

``snakemake --resources gpu=G`` only caps how many GPU jobs run at once; it never tells a job
*which* device to use (snakemake issue #281), so without this every job would pile onto
device 0. A lease is an exclusive, non-blocking ``flock`` on one lock file per device in a
node-local lock directory. The descriptor stays open for the lease's life and the kernel drops
the lock when it closes, including when the job is SIGKILLed, so a dead job never strands a
device. The job then sets ``CUDA_VISIBLE_DEVICES`` to the leased device(s); that must happen
before torch or faiss initialise CUDA, so lease first and import/use them afterwards (rule
scripts lease in ``copydetect.rule_script.start``, before their heavy imports).

The lock directory (config key ``gpu.lock_dir``, in ``/tmp`` by default) must be on a
node-local file system, never on a shared one: devices belong to one node, and ``flock`` over
NFS is not reliable. Holders of a lock can be listed with ``lslocks`` or ``fuser LOCKFILE``.

Devices are named as ``CUDA_VISIBLE_DEVICES`` names them. When the scheduler already set that
variable (SLURM does), leases are taken within its list and lock files are named by those
physical ids, so two jobs with overlapping lists on one node still never share a device. All
jobs on a node must agree on ``CUDA_DEVICE_ORDER`` for numeric ids to mean the same device.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from copydetect.flock import try_flock

logger = logging.getLogger(__name__)

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
# Marks CUDA_VISIBLE_DEVICES as set by a lease, so a nested lease (a helper called inside a
# leased script, or a child process it starts) reuses the devices instead of waiting on its own
# parent's locks until it times out.
LEASE_ENV = "COPYDETECT_GPU_LEASE"


class GpuLeaseError(RuntimeError):
    """No lease could be granted: too few devices, or all stayed busy past the wait."""


@dataclass
class GpuLease:
    """Devices held by one job; empty when it runs on the CPU.

    ``lock_files`` is empty also for a lease inherited from an enclosing one (whose owner holds
    the locks).
    """

    devices: list[str] = field(default_factory=list)
    lock_files: list[Path] = field(default_factory=list)
    _fds: list[int] = field(default_factory=list, repr=False, compare=False)

    def release(self) -> None:
        """Unlock the devices (closing the only descriptor of a lock file drops its flock)."""
        while self._fds:
            os.close(self._fds.pop())


# Leases from acquire_for_job: referenced here so they stay held until the process exits.
_JOB_LEASES: list[GpuLease] = []


def count_physical_gpus(timeout: float = 5.0) -> int:
    """Count the node's NVIDIA GPUs without initialising CUDA (no torch import)."""
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=timeout, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listing = None
    if listing is not None:
        # MIG instances appear as indented "MIG ..." lines under their GPU; count whole GPUs.
        return sum(1 for line in listing.splitlines() if line.startswith("GPU "))
    proc = Path("/proc/driver/nvidia/gpus")  # one entry per GPU, by PCI address
    return len(list(proc.iterdir())) if proc.is_dir() else 0


def parse_visible_devices(value: str) -> list[str]:
    """Device ids (ordinals or UUIDs) in a ``CUDA_VISIBLE_DEVICES`` value.

    Like CUDA, stop at the first empty or negative entry, so ``""`` and ``"-1"`` mean none.
    """
    ids: list[str] = []
    for item in value.split(","):
        item = item.strip()
        if not item or item.startswith("-"):
            break
        ids.append(item)
    return list(dict.fromkeys(ids))  # CUDA rejects duplicates; keep the first of each


def visible_devices(
    env: Mapping[str, str] | None = None, count: Callable[[], int] = count_physical_gpus
) -> list[str]:
    """Devices this process may lease: the scheduler's ``CUDA_VISIBLE_DEVICES`` if set, else
    ordinals ``0..k-1`` of the node's ``count()`` GPUs (``[]`` when there are none)."""
    env = os.environ if env is None else env
    if VISIBLE_ENV in env:
        return parse_visible_devices(env[VISIBLE_ENV])
    return [str(i) for i in range(count())]


def lock_file(lock_dir: str | os.PathLike, device: str) -> Path:
    """The lock file of one device; UUID characters unsafe in a file name become ``_``."""
    return Path(lock_dir) / f"gpu-{re.sub(r'[^A-Za-z0-9._-]', '_', device)}.lock"


def _prepare_lock_dir(lock_dir: Path) -> None:
    try:
        lock_dir.mkdir(parents=True)
    except FileExistsError:
        return
    # Every user's jobs on the node share the directory: world-writable and sticky, like /tmp.
    with contextlib.suppress(OSError):
        lock_dir.chmod(0o1777)


def _try_lease(n: int, lock_dir: Path, devices: list[str]) -> GpuLease | None:
    """Lock the first ``n`` free devices in order, or none at all."""
    lease = GpuLease()
    for device in devices:
        path = lock_file(lock_dir, device)
        fd = try_flock(path)
        if fd is None:
            continue
        lease.devices.append(device)
        lease.lock_files.append(path)
        lease._fds.append(fd)
        if len(lease.devices) == n:
            return lease
    # All or nothing: two multi-GPU jobs each holding part of a set while waiting could deadlock.
    lease.release()
    return None


def _wait_for_lease(
    n: int, lock_dir: Path, devices: list[str], wait_seconds: float, poll_seconds: float
) -> GpuLease:
    """Poll until ``n`` of ``devices`` are free; raise GpuLeaseError after ``wait_seconds``."""
    deadline = time.monotonic() + wait_seconds
    while (lease := _try_lease(n, lock_dir, devices)) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise GpuLeaseError(
                f"no {n} free GPU(s) among {','.join(devices)} after {wait_seconds:g} s: all "
                f"locked in {lock_dir} (another run on this node? see `lslocks`)"
            )
        logger.debug("GPUs %s busy; retrying for up to %.0f s", ",".join(devices), left)
        time.sleep(min(poll_seconds, left))
    return lease


def _export(devices: list[str]) -> None:
    """Point CUDA at ``devices`` and mark them as leased for nested leases."""
    torch = sys.modules.get("torch")
    with contextlib.suppress(AttributeError):
        if torch is not None and torch.cuda.is_initialized():
            logger.warning("CUDA already initialised: the GPU lease cannot restrict this process")
    os.environ[VISIBLE_ENV] = os.environ[LEASE_ENV] = ",".join(devices)


def _inherited_devices() -> list[str] | None:
    """Devices of an enclosing lease whose CUDA_VISIBLE_DEVICES is still in force."""
    marker = os.environ.get(LEASE_ENV)
    if marker and marker == os.environ.get(VISIBLE_ENV):
        return parse_visible_devices(marker)
    return None


def _acquire(
    n: int,
    lock_dir: str | os.PathLike,
    devices: list[str] | None,
    wait_seconds: float = 600,
    poll_seconds: float = 0.5,
) -> GpuLease:
    """Take a lease and export it to the environment (see ``gpu_lease``)."""
    if n < 0:
        raise ValueError(f"GPU count must be >= 0, got {n}")
    if n == 0:
        return GpuLease()
    inherited = _inherited_devices() if devices is None else None
    candidates = inherited or (visible_devices() if devices is None else devices)
    if not candidates:
        logger.warning("no GPU visible: running on the CPU")
        return GpuLease()
    if n > len(candidates):
        raise GpuLeaseError(f"{n} GPU(s) requested but only {','.join(candidates)} visible")
    if inherited:
        lease = GpuLease(devices=inherited[:n])
        logger.info("using GPU(s) %s of the enclosing lease", ",".join(lease.devices))
    else:
        _prepare_lock_dir(Path(lock_dir))
        lease = _wait_for_lease(n, Path(lock_dir), candidates, wait_seconds, poll_seconds)
        logger.info("leased GPU(s) %s (locks in %s)", ",".join(lease.devices), lock_dir)
    _export(lease.devices)
    return lease


@contextlib.contextmanager
def gpu_lease(
    n: int,
    lock_dir: str | os.PathLike,
    devices: list[str] | None = None,
    wait_seconds: float = 600,
    poll_seconds: float = 0.5,
) -> Iterator[GpuLease]:
    """Hold ``n`` GPUs for the block, with ``CUDA_VISIBLE_DEVICES`` set to them.

    ``devices`` defaults to ``visible_devices()``. With none visible the lease is empty and the
    environment untouched (the job runs on the CPU); ``n == 0`` is a no-op. If all devices are
    busy (Snakemake's gpu resource normally prevents that, but another run on the node may hold
    them), poll every ``poll_seconds`` for up to ``wait_seconds``, then raise GpuLeaseError. On
    exit the locks are released and the previous environment restored.
    """
    saved = {key: os.environ.get(key) for key in (VISIBLE_ENV, LEASE_ENV)}
    lease = _acquire(n, lock_dir, devices, wait_seconds, poll_seconds)
    try:
        yield lease
    finally:
        lease.release()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def acquire_for_job(
    n: int,
    lock_dir: str | os.PathLike,
    devices: list[str] | None = None,
    **wait: float,
) -> GpuLease:
    """Like ``gpu_lease`` (same arguments), but held until the process exits: for a rule script
    that needs the GPU(s) for its whole life (``copydetect.rule_script.start`` takes it). Call it
    before importing torch or faiss."""
    lease = _acquire(n, lock_dir, devices, **wait)
    _JOB_LEASES.append(lease)
    return lease


def torch_device(lease: GpuLease) -> str:
    """``"cuda"`` when ``lease`` holds a device and torch can use CUDA, else ``"cpu"``."""
    if not lease.devices:
        return "cpu"
    try:
        import torch  # lazily: importing torch costs seconds and must follow the lease
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
