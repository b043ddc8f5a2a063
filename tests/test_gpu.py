"""GPU leases on fake device lists: distinct devices per job, freed on SIGKILL, timeouts, env."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from copydetect.gpu import (
    LEASE_ENV,
    VISIBLE_ENV,
    GpuLease,
    GpuLeaseError,
    acquire_for_job,
    gpu_lease,
    lock_file,
    parse_visible_devices,
    torch_device,
    visible_devices,
)

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "workflow_scripts"

# A job: lease, report the devices, hold the lease until told to stop (or killed).
JOB = """
import os, sys, time
from pathlib import Path
from copydetect.gpu import acquire_for_job
lock_dir, report, stop = sys.argv[1:4]
acquire_for_job(1, lock_dir, devices=["0", "1", "2"], wait_seconds=0)
Path(report + ".tmp").write_text(os.environ["CUDA_VISIBLE_DEVICES"])
os.replace(report + ".tmp", report)
while not Path(stop).exists():
    time.sleep(0.01)
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start outside any scheduler allocation or enclosing lease."""
    monkeypatch.delenv(VISIBLE_ENV, raising=False)
    monkeypatch.delenv(LEASE_ENV, raising=False)


def start_job(tmp_path: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR)}
    args = [str(tmp_path / "locks"), str(tmp_path / f"{name}.report"), str(tmp_path / "stop")]
    return subprocess.Popen([sys.executable, "-c", JOB, *args], env=env)


def wait_for_reports(tmp_path: Path, names: list[str], jobs: list[subprocess.Popen]) -> list[str]:
    """Reports of all ``names``; fail early if a job died before reporting."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        paths = [tmp_path / f"{name}.report" for name in names]
        if all(path.exists() for path in paths):
            return [path.read_text() for path in paths]
        assert all(job.poll() is None for job in jobs), "a job exited before reporting"
        time.sleep(0.01)
    raise AssertionError("jobs did not report in time")


def assert_busy(
    locks: Path,
    devices: list[str],
    n: int = 1,
    wait_seconds: float = 0,
    poll_seconds: float = 0.5,
    match: str | None = None,
) -> None:
    """No lease of ``n`` of ``devices`` can be had within ``wait_seconds``."""
    lease = gpu_lease(n, locks, devices, wait_seconds=wait_seconds, poll_seconds=poll_seconds)
    with pytest.raises(GpuLeaseError, match=match), lease:
        pass


def stop_jobs(tmp_path: Path, jobs: list[subprocess.Popen]) -> None:
    (tmp_path / "stop").touch()
    for job in jobs:
        job.wait(timeout=5)


def test_concurrent_jobs_get_distinct_devices(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    jobs = [start_job(tmp_path, name) for name in names]
    try:
        # Every job is still holding its lease here, so the three overlap.
        reported = wait_for_reports(tmp_path, names, jobs)
        assert sorted(reported) == ["0", "1", "2"]
        assert_busy(tmp_path / "locks", ["0", "1", "2"])
    finally:
        stop_jobs(tmp_path, jobs)
    assert [job.returncode for job in jobs] == [0, 0, 0]


def test_a_killed_job_frees_its_device(tmp_path: Path) -> None:
    job = start_job(tmp_path, "victim")
    (held,) = wait_for_reports(tmp_path, ["victim"], [job])
    assert_busy(tmp_path / "locks", [held])
    os.kill(job.pid, signal.SIGKILL)
    job.wait(timeout=5)
    with gpu_lease(1, tmp_path / "locks", devices=[held], wait_seconds=0) as lease:
        assert lease.devices == [held]


def test_a_job_lease_ends_with_its_process(tmp_path: Path) -> None:
    job = start_job(tmp_path, "job")
    (held,) = wait_for_reports(tmp_path, ["job"], [job])
    stop_jobs(tmp_path, [job])
    assert job.returncode == 0
    with gpu_lease(1, tmp_path / "locks", devices=[held], wait_seconds=0) as lease:
        assert lease.devices == [held]


def test_when_all_are_held_the_next_waits_then_times_out(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    with gpu_lease(2, locks, devices=["0", "1"]) as held:
        assert sorted(held.devices) == ["0", "1"]
        start = time.monotonic()
        assert_busy(locks, ["0", "1"], wait_seconds=0.3, poll_seconds=0.05, match=str(locks))
        assert time.monotonic() - start >= 0.3


def test_a_waiting_job_gets_the_device_once_freed(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from copydetect.gpu import acquire_for_job;"
            "acquire_for_job(1, sys.argv[1], devices=['0']); print(flush=True); time.sleep(0.3)",
            str(locks),
        ],
        env={**os.environ, "PYTHONPATH": str(PACKAGE_DIR)},
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline()  # holder has the lock
    assert_busy(locks, ["0"])
    with gpu_lease(1, locks, devices=["0"], wait_seconds=5, poll_seconds=0.02) as lease:
        assert lease.devices == ["0"]
    holder.wait(timeout=5)


def test_multi_device_lease_is_all_or_nothing(tmp_path: Path) -> None:
    locks, devices = tmp_path / "locks", ["0", "1", "2"]
    with gpu_lease(1, locks, devices=devices) as first:
        with gpu_lease(2, locks, devices=devices) as pair:
            assert sorted(first.devices + pair.devices) == devices
            assert os.environ[VISIBLE_ENV] == ",".join(pair.devices)
        # Three cannot be had while one is held; the two free ones must not stay locked.
        assert_busy(locks, devices, n=3)
        with gpu_lease(2, locks, devices=devices, wait_seconds=0) as again:
            assert sorted(first.devices + again.devices) == devices


def test_lease_within_a_scheduler_list_uses_physical_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locks = tmp_path / "locks"
    monkeypatch.setenv(VISIBLE_ENV, "3,5")
    with gpu_lease(1, locks) as lease:
        assert lease.devices in (["3"], ["5"])
        assert lease.lock_files == [lock_file(locks, lease.devices[0])]
        # A job on the same node whose list overlaps ours must avoid the leased device.
        with gpu_lease(2, locks, devices=["5", "7", "3"]) as other:
            assert lease.devices[0] not in other.devices
    assert os.environ[VISIBLE_ENV] == "3,5"


def test_nested_lease_reuses_the_enclosing_devices(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    with gpu_lease(2, locks, devices=["0", "1", "2"]) as outer:
        with gpu_lease(1, locks, wait_seconds=0) as inner:
            assert inner.devices == outer.devices[:1] and inner.lock_files == []
            assert os.environ[VISIBLE_ENV] == outer.devices[0]
        assert os.environ[VISIBLE_ENV] == ",".join(outer.devices)


def test_env_is_restored_after_the_block_even_on_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with gpu_lease(1, tmp_path / "locks", devices=["0"]) as lease:
        assert os.environ[VISIBLE_ENV] == "0" and lease.devices == ["0"]
    assert VISIBLE_ENV not in os.environ and LEASE_ENV not in os.environ
    monkeypatch.setenv(VISIBLE_ENV, "4,6")
    with pytest.raises(KeyError), gpu_lease(1, tmp_path / "locks"):
        raise KeyError("job failed")
    assert os.environ[VISIBLE_ENV] == "4,6" and LEASE_ENV not in os.environ
    with gpu_lease(2, tmp_path / "locks", wait_seconds=0):  # both free again
        pass


def test_zero_gpus_is_a_no_op(tmp_path: Path) -> None:
    with gpu_lease(0, tmp_path / "locks", devices=["0"]) as lease:
        assert lease == GpuLease() and VISIBLE_ENV not in os.environ
    assert not (tmp_path / "locks").exists()


def test_no_visible_gpu_runs_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VISIBLE_ENV, "")
    with gpu_lease(1, tmp_path / "locks") as lease:
        assert lease.devices == [] and os.environ[VISIBLE_ENV] == ""
    assert torch_device(lease) == "cpu"


def test_more_gpus_than_visible_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(GpuLeaseError, match="only 0,1 visible"):
        acquire_for_job(3, tmp_path / "locks", devices=["0", "1"], wait_seconds=60)
    with pytest.raises(ValueError):
        acquire_for_job(-1, tmp_path / "locks")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", []),
        ("-1", []),
        ("0,1", ["0", "1"]),
        (" 2 , 3 ", ["2", "3"]),
        ("0,-1,2", ["0"]),
        ("1,1", ["1"]),
        ("GPU-8f2c1a4e-0000-1111-2222-333344445555", ["GPU-8f2c1a4e-0000-1111-2222-333344445555"]),
    ],
)
def test_parse_visible_devices(value: str, expected: list[str]) -> None:
    assert parse_visible_devices(value) == expected


def test_visible_devices_counts_gpus_only_without_a_scheduler_list() -> None:
    assert visible_devices({}, count=lambda: 2) == ["0", "1"]
    assert visible_devices({}, count=lambda: 0) == []
    assert visible_devices({VISIBLE_ENV: "5"}, count=lambda: 8) == ["5"]


def test_lock_file_names_are_safe_for_uuids(tmp_path: Path) -> None:
    path = lock_file(tmp_path, "MIG-GPU-abc/1/0")
    assert path.parent == tmp_path and path.name == "gpu-MIG-GPU-abc_1_0.lock"


def test_torch_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert torch_device(GpuLease()) == "cpu"
    fake = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert torch_device(GpuLease(devices=["0"])) == "cuda"
    fake.cuda.is_available = lambda: False
    assert torch_device(GpuLease(devices=["0"])) == "cpu"
