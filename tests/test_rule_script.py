"""The one start of every rule script: log file and format, the GPU lease, the scripts' shape."""

from __future__ import annotations

import ast
import logging
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from script_runner import SCRIPTS, Named

from copydetect import gpu, rule_script
from copydetect.gpu import LEASE_ENV, VISIBLE_ENV, GpuLeaseError, gpu_lease
from copydetect.rule_script import exit_cleanly_on, start

# Every rule script; print_run_summary.py is a command-line tool, not a rule script.
RULE_SCRIPTS = sorted(p for p in SCRIPTS.glob("*.py") if p.name != "print_run_summary.py")
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ([\w.]+): (.*)$")


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts like a job (no enclosing lease, no log setup) and leaves the process as
    it was: streams, logging, warnings and the leases ``start`` keeps for the process' life."""
    monkeypatch.delenv(VISIBLE_ENV, raising=False)
    monkeypatch.delenv(LEASE_ENV, raising=False)
    saved_err, saved_out, root = sys.stderr, sys.stdout, logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []
    leases = len(gpu._JOB_LEASES)
    try:
        yield
    finally:
        if sys.stderr is not saved_err:
            sys.stderr.close()
        sys.stderr, sys.stdout = saved_err, saved_out
        root.handlers, root.level = handlers, level
        logging.captureWarnings(False)
        while len(gpu._JOB_LEASES) > leases:
            gpu._JOB_LEASES.pop().release()


def job(tmp_path: Path, gpus: int | None = None, **params: str) -> SimpleNamespace:
    """A ``snakemake`` stand-in; ``gpus=None`` is a rule that declares no gpu resource. Clears
    the root logger's handlers (pytest adds its own for each test phase), as in a new job."""
    logging.getLogger().handlers = []
    resources = Named() if gpus is None else Named(gpu=gpus)
    log = [str(tmp_path / "job.log")]
    return SimpleNamespace(log=log, resources=resources, params=Named(params))


def test_start_sends_logs_output_and_warnings_to_the_log_in_one_format(tmp_path: Path) -> None:
    start(job(tmp_path))
    logging.getLogger("copydetect.demo").info("hello")
    logging.warning("from the script")
    print("progress of a library")
    warnings.warn("odd file", UserWarning, stacklevel=1)
    sys.stderr.flush()
    lines = (tmp_path / "job.log").read_text().splitlines()
    parsed = [LINE.match(line) for line in lines if LINE.match(line)]
    assert [m.groups()[:2] for m in parsed] == [
        ("INFO", "copydetect.demo"),
        ("WARNING", "root"),
        ("WARNING", "py.warnings"),
    ]
    assert parsed[0].group(3) == "hello" and "odd file" in parsed[2].group(3)
    assert "progress of a library" in lines


def test_no_lease_when_the_rule_declares_no_gpu(tmp_path: Path) -> None:
    # No gpu_lock_dir either: a CPU rule need not declare it (Named raises if it were read).
    started = start(job(tmp_path))
    assert started.lease.devices == [] and not started.on_gpu
    assert VISIBLE_ENV not in os.environ
    started = start(job(tmp_path, gpus=0))
    assert not started.on_gpu and VISIBLE_ENV not in os.environ


def test_a_gpu_rule_leases_its_device_for_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VISIBLE_ENV, "3,5")  # a scheduler's list: no real GPU needed
    locks = tmp_path / "locks"
    started = start(job(tmp_path, gpus=1, gpu_lock_dir=str(locks)))
    assert started.on_gpu and started.lease.devices in (["3"], ["5"])
    assert os.environ[VISIBLE_ENV] == started.lease.devices[0]
    # Held for the job: nobody else gets that device.
    other = gpu_lease(1, locks, devices=started.lease.devices, wait_seconds=0)
    with pytest.raises(GpuLeaseError), other:
        pass
    sys.stderr.flush()
    assert f"leased GPU(s) {started.lease.devices[0]}" in (tmp_path / "job.log").read_text()


@pytest.mark.parametrize(("device", "leases"), [("cpu", False), ("auto", True), (None, True)])
def test_a_device_job_told_to_use_the_cpu_takes_no_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str | None, leases: bool
) -> None:
    monkeypatch.setenv(VISIBLE_ENV, "7")
    started = start(job(tmp_path, gpus=1, gpu_lock_dir=str(tmp_path / "locks")), device=device)
    assert started.on_gpu == leases
    assert os.environ[VISIBLE_ENV] == "7"  # the one device, or untouched


def test_a_lease_that_cannot_be_had_ends_the_job_with_one_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def busy(n: int, lock_dir: str) -> gpu.GpuLease:
        raise GpuLeaseError(f"no free GPU in {lock_dir}")

    monkeypatch.setattr(rule_script, "acquire_for_job", busy)
    with pytest.raises(SystemExit) as stop:
        start(job(tmp_path, gpus=1, gpu_lock_dir=str(tmp_path / "locks")))
    assert stop.value.code == 1
    sys.stderr.flush()
    log = (tmp_path / "job.log").read_text()
    assert f"no free GPU in {tmp_path / 'locks'}" in log and "Traceback" not in log


def test_starting_imports_nothing_that_could_touch_cuda() -> None:
    heavy = ("torch", "faiss", "ultralytics", "numpy", "cv2", "h5py", "pandas")
    code = f"import sys, copydetect.rule_script; print([m for m in {heavy!r} if m in sys.modules])"
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def module_level_imports(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


def calls_at_module_level(tree: ast.Module) -> list[str]:
    """Names of the functions called by module-level statements, in order."""
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            continue
        for call in ast.walk(node):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
                names.append(call.func.id)
    return names


@pytest.mark.parametrize("script", RULE_SCRIPTS, ids=lambda p: p.name)
def test_every_rule_script_starts_before_its_heavy_imports(script: Path) -> None:
    text = script.read_text()
    tree = ast.parse(text)
    for name in module_level_imports(tree):
        top = name.split(".")[0]
        assert name == "copydetect.rule_script" or (
            top in sys.stdlib_module_names and top != "copydetect"
        ), f"{script.name}: {name} is imported before start()"
    calls = calls_at_module_level(tree)
    assert "start" in calls and "main" in calls, f"{script.name}: no start() and main()"
    assert "noqa: E402" not in text


def test_expected_errors_end_the_job_cleanly_and_others_propagate(tmp_path: Path) -> None:
    start(job(tmp_path))
    with pytest.raises(SystemExit) as stop, exit_cleanly_on(KeyError, ValueError):
        raise ValueError("setting 'size' must be >= 16")
    assert stop.value.code == 1
    with pytest.raises(ZeroDivisionError), exit_cleanly_on(ValueError):
        raise ZeroDivisionError
    sys.stderr.flush()
    log = (tmp_path / "job.log").read_text()
    assert "ERROR root: setting 'size' must be >= 16" in log and "Traceback" not in log


def test_a_job_logs_its_cpu_seconds_last_when_it_exits(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    code = (
        "from types import SimpleNamespace\n"
        "import logging\n"
        "from copydetect.rule_script import start\n"
        f"start(SimpleNamespace(log=[{str(log)!r}], resources={{}}, params=None))\n"
        "sum(i * i for i in range(2_000_000))\n"  # some CPU to count
        "logging.info('work done')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = [LINE.match(line) for line in log.read_text().splitlines()]
    assert [m.group(3) for m in lines][0] == "work done"
    pattern = r"job CPU seconds: ([\d.]+) user, ([\d.]+) system, peak RSS ([\d.]+) MiB"
    cpu = re.fullmatch(pattern, lines[-1].group(3))
    assert cpu is not None and float(cpu.group(1)) + float(cpu.group(2)) > 0.01
    assert float(cpu.group(3)) > 1.0


def test_the_cpu_line_is_skipped_once_the_log_is_closed(tmp_path: Path) -> None:
    start(job(tmp_path))
    stream = sys.stderr
    stream.close()
    rule_script.log_cpu_usage(stream)  # what atexit would call: no error, nothing written
    assert "job CPU seconds" not in (tmp_path / "job.log").read_text()
