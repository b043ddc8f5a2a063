"""The SLURM profiles: their GPU settings, a dry run with each, and a real run on a single-node
SLURM cluster (tests/slurm/start_slurm.sh) whose predictions must be byte-identical to a local
run's, with every job submitted through sbatch and COMPLETED in SLURM's own job records.

The real run (marked slow: a few minutes, `-m "not slow"` leaves it out) needs root, since the
script installs and starts slurmctld, slurmd and munge; it is skipped, saying why, only where
that cannot happen.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from workflow_helpers import ROOT, SNAKEMAKE, snakemake, snakemake_env, write_tiny_sets

pytestmark = pytest.mark.workflow

PROFILES = ROOT / "profiles"
SLURM_SCRIPTS = Path(__file__).parent / "slurm"
SBIN_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
# The tiny sets of workflow_helpers (5 queries, 12 references, 5 training images) in few shards
# (1 query, 2 reference, 1 training shard; one local search per reference shard), with a small
# VLAD codebook so that the PCA fit takes seconds: every job costs a Snakemake start in SLURM.
# The logistic fusion is fitted on a development run of the same DAG (a tiny set synthesized
# from the training images: 4 references, 4 copies, 1 distractor), so its jobs go through
# SLURM too.
TINY_RUN = {
    "sharding": {"queries": {"shard_size": 8}, "references": {"shard_size": 6}},
    "local": {"reference_shards_per_job": 1},
    "models": {"vlad": {"codebook_size": 16}},
    "fusion": {
        "method": "logistic",
        "development": {"references": 4, "copy_queries": 4, "distractors": 1},
    },
}
SLURM_RUN_TIMEOUT_S = 1200  # the development run adds about a dozen submissions


def load_profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def gpu_rules() -> set[str]:
    """Rules of rules/*.smk that declare a ``gpu`` resource."""
    names = set()
    for path in (ROOT / "rules").glob("*.smk"):
        blocks = re.split(r"^(?=rule \w+:)", path.read_text(), flags=re.M)
        for block in blocks:
            match = re.match(r"rule (\w+):", block)
            if match and re.search(r"^\s+gpu=", block, re.M):
                names.add(match.group(1))
    return names


# --- The profiles, without SLURM ---------------------------------------------------------------


def test_gpu_rules_ask_slurm_for_a_gpu_and_the_cpu_profile_for_none() -> None:
    rules = gpu_rules()
    assert {"local_search", "global_search"} <= rules
    slurm, cpu = load_profile("slurm")["set-resources"], load_profile("slurm-cpu")["set-resources"]
    for rule in rules:
        # No override in the GPU profile: the rule's own gpu=1 reaches sbatch as --gpus=1.
        assert "gpu" not in slurm.get(rule, {}), rule
        assert cpu.get(rule, {}).get("gpu") == 0, f"slurm-cpu lacks {rule}: gpu: 0"


def test_cpu_profile_differs_from_the_slurm_profile_only_in_gpu_keys() -> None:
    slurm, cpu = load_profile("slurm"), load_profile("slurm-cpu")
    for resources in cpu["set-resources"].values():
        resources.pop("gpu", None)
    assert cpu == slurm


@pytest.mark.parametrize("profile", ["slurm", "slurm-cpu"])
def test_dry_run_with_the_profile_plans_the_whole_workflow(tmp_path: Path, profile: str) -> None:
    config = {**write_tiny_sets(tmp_path / "data"), **TINY_RUN}
    planned = plan_with_profile(tmp_path / "run", config, profile)
    assert {"ingest", "sift", "local_search", "verify", "fuse"} <= set(planned.jobs)
    # One submission per shard for its ingest + sift (4 of the main run, 2 of the development
    # run, planned before its set exists); the small jobs bundled.
    assert planned.jobs["ingest"] == 6
    # and the SIFT of both crop sets of the main run's 2 query shards (overlay.detector)
    assert planned.jobs["sift"] == 6 + 4
    assert planned.submissions["group_features"] == 6 + 4  # a crop set's SIFT: one each
    assert planned.submissions["group_vlad"] == 1
    assert sum(planned.submissions.values()) < sum(planned.jobs.values()) - 1


# --- A real single-node SLURM cluster ----------------------------------------------------------


def slurm_unavailable_reason() -> str | None:
    """Why start_slurm.sh cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return (
            f"a real SLURM run needs root to install and start slurmctld/slurmd/munge "
            f"(tests/slurm/start_slurm.sh); running as uid {os.geteuid()}"
        )
    if not shutil.which("slurmctld", path=SBIN_PATH) and not shutil.which("apt-get"):
        return "no slurmctld binary and no apt-get to install SLURM with"
    return None


def scontrol_fields(*args: str) -> dict[str, str]:
    """``KEY=VALUE`` fields of one ``scontrol show … -o`` record."""
    out = subprocess.run(
        ["scontrol", "-o", "show", *args], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


@pytest.fixture(scope="module")
def slurm_cluster() -> dict[str, str]:
    """Start (or find running) the test cluster; the SLURM configuration as fields."""
    reason = slurm_unavailable_reason()
    if reason:
        pytest.skip(reason)
    started = subprocess.run(
        ["bash", str(SLURM_SCRIPTS / "start_slurm.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert started.returncode == 0, f"start_slurm.sh failed:\n{started.stderr[-3000:]}"
    config = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"^(\w+)\s+=\s+(.*?)\s*$", config, re.M))


@dataclass
class Submission:
    """One sbatch submission as the plugin logs it."""

    slurm_id: str
    name: str  # rule_<rule>, or group_<group> (the plugin appends the group's rule names)


@dataclass
class SlurmRun:
    workdir: Path
    run_id: str  # the plugin's run UUID: the SLURM job name of all its jobs
    submissions: list[Submission]
    log: str


def parse_submissions(log: str, group_ids: set[str]) -> tuple[str, list[Submission]]:
    """The run UUID and the submissions in a Snakemake log of the SLURM executor."""
    run_id = re.search(r"SLURM run ID: (\S+)", log)
    assert run_id, f"no SLURM run ID in the log:\n{log[-3000:]}"
    pattern = r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/((?:rule|group)_\w+)/"
    submissions = []
    for slurm_id, name in re.findall(pattern, log):
        # A group job's log folder is group_<group>_<rule>_<rule>…: keep group_<group>.
        owners = [g for g in group_ids if name.startswith(f"group_{g}_")]
        if owners:
            name = f"group_{max(owners, key=len)}"
        submissions.append(Submission(slurm_id, name))
    return run_id.group(1), submissions


def start_slurm_run(workdir: Path, config: dict, node: dict[str, str]) -> subprocess.Popen:
    """Start the workflow with profiles/slurm, plus what only this test cluster needs: squeue for
    job states (no accounting database), first status checks after 5 s instead of 40, memory
    within the node's (`--resources` caps every job's mem_mb; it replaces the profile's list,
    so gpu=1 is repeated), threads within its CPUs."""
    workdir.mkdir(parents=True)
    overrides = workdir.parent / f".{workdir.name}-config.yaml"
    overrides.write_text(yaml.safe_dump(config))
    cpus = int(node["CPUTot"])
    job_memory = int(node["RealMemory"]) // cpus
    cmd = [
        SNAKEMAKE,
        *("-s", str(ROOT / "Snakefile"), "--directory", str(workdir)),
        *("--configfile", str(ROOT / "config" / "config.yaml"), str(overrides)),
        *("--workflow-profile", str(PROFILES / "slurm")),
        *("--cores", str(cpus), "--resources", f"mem_mb={job_memory}", "gpu=1"),
        *("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5"),
        *("--latency-wait", "5", "--slurm-keep-successful-logs"),
    ]
    env = snakemake_env()
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def finish_slurm_run(process: subprocess.Popen, workdir: Path) -> SlurmRun:
    """Wait for the run (interrupting it, which cancels its SLURM jobs, after the timeout)."""
    try:
        log, _ = process.communicate(timeout=SLURM_RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # snakemake cancels its SLURM jobs on SIGINT
        log, _ = process.communicate(timeout=120)
        pytest.fail(f"SLURM run still going after {SLURM_RUN_TIMEOUT_S} s:\n{log[-5000:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, log[-6000:]
    run_id, submissions = parse_submissions(log, set(load_profile("slurm")["groups"].values()))
    return SlurmRun(workdir, run_id, submissions, log)


def jobcomp_records(path: Path, run_id: str) -> dict[str, dict[str, str]]:
    """SLURM's completion records (jobcomp/filetxt) of the jobs named ``run_id``, by job id."""
    records = {}
    for line in path.read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("Name") == run_id:
            records[fields["JobId"]] = fields
    return records


@dataclass
class ProfilePlan:
    """A dry run with a profile: jobs per rule, and the submissions it plans (``rule_<rule>``
    per ungrouped job, ``group_<group>`` per group job), named as the plugin names them."""

    jobs: Counter
    submissions: Counter


def plan_with_profile(workdir: Path, config: dict, profile: str) -> ProfilePlan:
    result = snakemake(workdir, config, "-n", "--workflow-profile", str(PROFILES / profile))
    assert result.returncode == 0, result.stdout[-5000:]
    stats = re.search(r"^job\s+count\n-+\s+-+\n(.*?)^total", result.stdout, re.M | re.S)
    assert stats, result.stdout[-3000:]
    jobs = Counter(
        {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", stats.group(1), re.M)}
    )
    # Ungrouped jobs print as unindented "rule NAME:" (or "checkpoint NAME:") blocks; grouped
    # ones, indented, under a "Group job NAME" header per group job.
    submissions = Counter(
        f"rule_{rule}" for rule in re.findall(r"^(?:rule|checkpoint) (\w+):", result.stdout, re.M)
    )
    submissions.update(f"group_{g}" for g in re.findall(r"Group job (\w+) \(", result.stdout))
    del submissions["rule_all"]  # a target-only rule: nothing to submit
    return ProfilePlan(jobs, submissions)


def job_counts(log: str) -> Counter:
    """Jobs per rule as Snakemake prints them when it starts them (a dry run too), the members
    of a group job indented under its header; rule all (nothing to submit) left out."""
    jobs = Counter(re.findall(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):", log, re.M))
    del jobs["all"]
    return jobs


def planned_run(workdir: Path, config: dict) -> ProfilePlan:
    """The jobs and submissions of a whole run with profiles/slurm, the development run's
    included: its shards are planned from the set's sizes, so one dry run lists every job."""
    result = snakemake(workdir, config, "-n", "--workflow-profile", str(PROFILES / "slurm"))
    assert result.returncode == 0, result.stdout[-5000:]
    jobs = job_counts(result.stdout)
    assert jobs["fit_vlad_codebook"] == 2  # the main run's and the development run's
    assert jobs["synthesize_development"] == 1
    return ProfilePlan(jobs, plan_with_profile(workdir, config, "slurm").submissions)


@pytest.fixture(scope="module")
def local_and_slurm_runs(
    slurm_cluster: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, SlurmRun, ProfilePlan]:
    root = tmp_path_factory.mktemp("slurm")
    config = {**write_tiny_sets(root / "data"), **TINY_RUN}
    expected = planned_run(root / "plan", config)
    # Both runs at once: the SLURM run mostly waits (job starts, status checks).
    slurm = start_slurm_run(root / "slurm", config, scontrol_fields("node", "localhost"))
    try:
        local = snakemake(root / "local", config)
    finally:
        run = finish_slurm_run(slurm, root / "slurm")
    assert local.returncode == 0, local.stdout[-5000:]
    return root / "local", run, expected


@pytest.mark.slow
def test_every_job_ran_as_a_completed_slurm_job(
    local_and_slurm_runs: tuple[Path, SlurmRun, ProfilePlan], slurm_cluster: dict[str, str]
) -> None:
    _, run, expected = local_and_slurm_runs
    # Every planned job ran exactly once. (With synthesize_development a checkpoint, Snakemake
    # once ended this run early, exit 0 at 57 of 76 steps: snakemake/snakemake#823.)
    ran = job_counts(run.log)
    assert ran == expected.jobs, run.log[-4000:]
    # One submission per ungrouped job; group jobs at least as many as planned (the plan
    # bundles the development run's jobs with the main run's, the run may not).
    submitted = Counter(s.name for s in run.submissions)
    assert submitted.keys() == expected.submissions.keys(), run.log[-4000:]
    for name, count in expected.submissions.items():
        assert count == submitted[name] or (name.startswith("group_") and count < submitted[name])
    records = jobcomp_records(Path(slurm_cluster["JobCompLoc"]), run.run_id)
    assert sorted(records) == sorted(s.slurm_id for s in run.submissions)
    for record in records.values():
        assert record["JobState"] == "COMPLETED", record
        assert record["WorkDir"] == str(run.workdir)
        assert record["ExitCode"] == "0:0"


@pytest.mark.slow
def test_gpu_rules_were_given_a_gpu_by_slurm(
    local_and_slurm_runs: tuple[Path, SlurmRun, ProfilePlan],
) -> None:
    _, run, _ = local_and_slurm_runs
    gpu_jobs = [s for s in run.submissions if s.name == "rule_global_search"]
    assert gpu_jobs
    for submission in gpu_jobs:
        job = scontrol_fields("job", submission.slurm_id)
        assert job["TresPerJob"] == "gres:gpu:1", job
        assert job["Comment"].startswith(submission.name), job
    # The default local index (ivf) searches on CPU: its jobs ask for no GPU (gpu=0 from the
    # rule's resource function), like the CPU-only groups.
    cpu_jobs = [s for s in run.submissions if s.name in ("group_features", "rule_local_search")]
    assert {s.name for s in cpu_jobs} == {"group_features", "rule_local_search"}
    for submission in cpu_jobs:
        assert "TresPerJob" not in scontrol_fields("job", submission.slurm_id)


@pytest.mark.slow
def test_slurm_predictions_are_byte_identical_to_the_local_run(
    local_and_slurm_runs: tuple[Path, SlurmRun, ProfilePlan],
) -> None:
    local, run, _ = local_and_slurm_runs
    slurm_predictions = (run.workdir / "results" / "predictions.csv").read_bytes()
    assert slurm_predictions.count(b"\n") > 1
    assert slurm_predictions == (local / "results" / "predictions.csv").read_bytes()
    # The fusion was fitted on the development run's jobs, which SLURM ran like the others.
    slurm_model = (run.workdir / "results" / "fusion" / "model.json").read_bytes()
    assert slurm_model == (local / "results" / "fusion" / "model.json").read_bytes()
    assert any(s.name == "rule_synthesize_development" for s in run.submissions)


@pytest.mark.slow
def test_no_job_of_the_run_is_left_in_the_queue(
    local_and_slurm_runs: tuple[Path, SlurmRun, ProfilePlan],
) -> None:
    _, run, _ = local_and_slurm_runs
    queued = subprocess.run(
        ["squeue", "--noheader", "--states=PENDING,RUNNING", "--name", run.run_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert queued.strip() == ""
