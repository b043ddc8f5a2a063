"""Resume after kill -9 with the same command; never two live runs in one folder."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from workflow_helpers import snakemake, snakemake_command, write_tiny_sets

from copydetect.run_lock import LiveRunError, require_run_lock, take_run_lock

# A process that holds the run lock of the folder given as argv[1] until it is killed.
HOLDER = """
import sys, time
from copydetect.run_lock import take_run_lock
assert take_run_lock(sys.argv[1]).held
print("held", flush=True)
time.sleep(600)
"""


def stale_locks(state: Path) -> list[Path]:
    (state / "locks").mkdir(parents=True)
    locks = [state / "locks" / "0.input.lock", state / "locks" / "0.output.lock"]
    for lock in locks:
        lock.write_text("results/predictions.csv\n")
    return locks


def start_holder(state: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "workflow_scripts")}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_locks_of_a_dead_run_are_removed(tmp_path: Path) -> None:
    locks = stale_locks(tmp_path / ".snakemake")
    outcome = take_run_lock(tmp_path / ".snakemake")
    assert outcome.held and sorted(outcome.removed) == sorted(map(str, locks))
    assert not any(lock.exists() for lock in locks)
    assert take_run_lock(tmp_path / ".snakemake").held  # this process already holds it


def test_locks_of_a_live_run_are_kept_until_it_is_killed(tmp_path: Path) -> None:
    state = tmp_path / ".snakemake"
    holder = start_holder(state)
    try:
        locks = stale_locks(state)
        outcome = take_run_lock(state)
        assert not outcome.held and outcome.holder == f"pid {holder.pid}"
        assert all(lock.exists() for lock in locks)
        with pytest.raises(LiveRunError, match=f"pid {holder.pid}"):
            require_run_lock(state)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert take_run_lock(state).removed  # the kernel dropped the dead holder's lock


def run_killed(workdir: Path, config: dict, after: float) -> bool:
    """Start the run in a process group of its own and SIGKILL the whole group ``after``
    seconds later (or let it end if it ends first); whether it was killed."""
    cmd, env = snakemake_command(workdir, config)
    run = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        run.wait(timeout=after)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        return True
    return False


@pytest.mark.workflow
@pytest.mark.slow
def test_kill_9_at_random_moments_then_the_same_command_resumes(tmp_path: Path) -> None:
    config = {
        **write_tiny_sets(tmp_path / "data"),
        "sharding": {"queries": {"shard_size": 4}, "references": {"shard_size": 4}},
    }
    start = time.monotonic()
    clean = snakemake(tmp_path / "clean", config)
    assert clean.returncode == 0, clean.stdout[-3000:]
    duration = time.monotonic() - start
    rng = random.Random(0)
    kills = 0
    # Moments up to a fifth of a whole run: five kills cannot finish the work between them.
    for _ in range(12):  # a run that ends before its moment is not a kill: draw again
        kills += run_killed(tmp_path / "killed", config, rng.uniform(1.0, 0.2 * duration))
        if kills == 5:
            break
    assert kills == 5
    resumed = snakemake(tmp_path / "killed", config)  # the same command, no --unlock
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    for name in ("predictions.csv", "eval/metrics.json", "fuse/scored_pairs.csv"):
        clean_bytes = (tmp_path / "clean" / "results" / name).read_bytes()
        assert (tmp_path / "killed" / "results" / name).read_bytes() == clean_bytes, name
