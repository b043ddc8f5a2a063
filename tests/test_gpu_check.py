"""benchmarks/gpu_check.py's parsing and checks, on synthetic job logs (no GPU needed)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_check  # noqa: E402
from gpu_check import (  # noqa: E402
    GpuProbe,
    JobLog,
    JobTiming,
    check_gpu_use,
    collect_timings,
    job_shard,
    max_concurrent,
    overlapping_shared,
    parse_job_log,
    refusal,
    stage_throughput,
)

LEASE = "INFO copydetect.gpu: leased GPU(s) {d} (locks in /tmp/copydetect-gpu-locks)"
RELEASE = "INFO root: releasing GPU(s) {d}"


def log(start: str, end: str, devices: str, *middle: str) -> str:
    """A job log leasing ``devices`` from ``start`` to ``end`` (HH:MM:SS on one day)."""
    lines = [f"2026-11-29 10:{start},000 {LEASE.format(d=devices)}"]
    lines += [f"2026-11-29 10:{start},500 {m}" for m in middle]
    lines.append(f"2026-11-29 10:{end},000 {RELEASE.format(d=devices)}")
    return "\n".join(lines) + "\n"


def t(mm_ss: str) -> dt.datetime:
    return dt.datetime.strptime(f"2026-11-29 10:{mm_ss}", "%Y-%m-%d %H:%M:%S")


def test_parse_job_log_reads_lease_interval_and_devices() -> None:
    text = log(
        "00:01",
        "00:09",
        "1,3",
        "INFO copydetect.knn: faiss device: gpu",
        "INFO root: torch device: cuda",
        "INFO root: detecting on 0: DetectParams(...)",
    )
    job = parse_job_log("detect_overlays/s0000.log", text)
    assert job.devices == ["1", "3"]
    assert (job.start, job.end) == (t("00:01"), t("00:09"))
    assert job.faiss_devices == ["gpu"]
    assert job.torch_devices == ["cuda"]


def test_parse_job_log_nested_lease_and_missing_release() -> None:
    text = (
        "2026-11-29 10:00:01,000 INFO copydetect.gpu: "
        "using GPU(s) GPU-ab12 of the enclosing lease\n"
        "2026-11-29 10:00:04,250 INFO root: torch device: 0\n"
    )
    job = parse_job_log("x.log", text)
    assert job.devices == ["GPU-ab12"]
    # A killed job never logs its release: its lease ends at the last line.
    assert job.end == dt.datetime(2026, 11, 29, 10, 0, 4, 250000)


def test_parse_job_log_cpu_job_has_no_lease() -> None:
    text = "2026-11-29 10:00:01,000 WARNING copydetect.gpu: no GPU visible: running on the CPU\n"
    job = parse_job_log("x.log", text + "2026-11-29 10:00:02,000 INFO k: faiss device: cpu\n")
    assert not job.leased and job.start is None
    assert job.faiss_devices == ["cpu"]


def jobs(*specs: tuple[str, str, str, str]) -> list[JobLog]:
    return [JobLog(n, d.split(","), t(a), t(b)) for n, a, b, d in specs]


def test_overlap_with_shared_device_is_reported() -> None:
    found = overlapping_shared(
        jobs(
            ("a", "00:00", "00:10", "0"),
            ("b", "00:05", "00:15", "0,1"),
            ("c", "00:11", "00:20", "0"),
        )
    )
    # a and b overlap on 0; b and c overlap on 0; a and c do not overlap in time.
    assert found == [("a", "b", ["0"]), ("b", "c", ["0"])]


def test_overlap_with_disjoint_devices_or_touching_intervals_is_fine() -> None:
    assert (
        overlapping_shared(jobs(("a", "00:00", "00:10", "0"), ("b", "00:01", "00:09", "1"))) == []
    )
    assert (
        overlapping_shared(jobs(("a", "00:00", "00:10", "0"), ("b", "00:10", "00:12", "0"))) == []
    )


def test_max_concurrent() -> None:
    spec = jobs(
        ("a", "00:00", "00:10", "0"), ("b", "00:05", "00:15", "1"), ("c", "00:10", "00:20", "0")
    )
    assert max_concurrent(spec) == 2
    assert max_concurrent([]) == 0


def gpu_job(name: str, devices: str, torch: list[str], faiss: list[str], a: str, b: str) -> JobLog:
    return JobLog(name, devices.split(","), t(a), t(b), torch, faiss)


def test_check_gpu_use_passes_on_good_logs() -> None:
    good = [
        gpu_job("train.log", "0", ["0"], [], "00:00", "00:30"),
        gpu_job("search.log", "1", [], ["gpu"], "00:10", "00:20"),
        JobLog("fuse.log"),  # a CPU rule: no lease, nothing to check
    ]
    assert check_gpu_use(good) == []


def test_check_gpu_use_reports_each_failure() -> None:
    bad = [
        gpu_job("a.log", "0", ["cpu"], ["cpu"], "00:00", "00:30"),
        gpu_job("b.log", "0", [], [], "00:10", "00:20"),
    ]
    problems = check_gpu_use(bad)
    assert any("torch device: cuda" in p for p in problems)
    assert any("faiss device: gpu" in p for p in problems)
    assert any(p.startswith("a.log leased GPU(s) 0 but ran on") for p in problems)
    assert any("a.log and b.log ran at the same time on GPU(s) 0" in p for p in problems)
    assert check_gpu_use([JobLog("x.log")])[0] == "no job log has a 'leased GPU(s)' line"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("embed/resnet/queries/s0000.tsv", ("embed", "queries", "s0000")),
        ("local_search/queries_mirrored/s0001/g0000.tsv", ("local_search", "queries", "s0001")),
        ("global_search/vlad/crops_global/s0002.tsv", ("global_search", "crops_global", "s0002")),
        ("augment_references/vlad/s0003.tsv", ("augment_references", "references", "s0003")),
        ("detect_overlays/s0004.tsv", ("detect_overlays", "queries", "s0004")),
        ("train_overlay_detector.tsv", ("train_overlay_detector", None, None)),
    ],
)
def test_job_shard(path: str, expected: tuple) -> None:
    assert job_shard(Path(path)) == expected


def test_stage_throughput_sums_images_and_seconds() -> None:
    stages = stage_throughput(
        [
            JobTiming("local_search", 32, 2.0),
            JobTiming("embed", 32, 1.0),
            JobTiming("local_search", 8, 2.0),
            JobTiming("other", 1, 0.0),
        ]
    )
    assert [s.stage for s in stages] == ["embed", "local_search", "other"]
    assert (stages[1].jobs, stages[1].images, stages[1].per_second) == (2, 40, 10.0)
    assert stages[2].per_second != stages[2].per_second  # 0 s: NaN, not a division error


def test_collect_timings_reads_only_leased_jobs(tmp_path: Path) -> None:
    bench = tmp_path / "benchmarks"
    header = "s\th:m:s\tmax_rss\n"
    for rel, s in [
        ("embed/resnet/queries/s0000", "4.0"),
        ("embed/vlad/queries/s0000", "1.0"),  # the VLAD rule leases no GPU
        ("train_overlay_detector", "60.0"),
    ]:
        (bench / rel).parent.mkdir(parents=True, exist_ok=True)
        (bench / f"{rel}.tsv").write_text(f"{header}{s}\t0:00:04\t90.0\n")
    (tmp_path / "images" / "queries").mkdir(parents=True)
    (tmp_path / "images" / "queries" / "s0000.h5").write_text("")
    leased = {"embed/resnet/queries/s0000", "train_overlay_detector"}
    trained = {"train_overlay_detector": 1500, "train_descriptor": 80}
    timings = collect_timings(tmp_path, leased, lambda path: 20, trained_images=trained)
    assert timings == [
        JobTiming("embed", 20, 4.0),
        JobTiming("train_overlay_detector", 1500, 60.0),
    ]


@pytest.mark.parametrize(
    ("probe", "names"),
    [
        (GpuProbe(torch_cuda=False, faiss_gpus=0), ["torch.cuda", "faiss.get_num_gpus"]),
        (GpuProbe(torch_cuda=True, faiss_gpus=0), ["faiss.get_num_gpus"]),
        (GpuProbe(torch_cuda=False, faiss_gpus=1), ["torch.cuda"]),
    ],
)
def test_refusal_names_what_is_missing(probe: GpuProbe, names: list[str]) -> None:
    message = refusal(probe)
    assert message is not None and message.startswith("gpu_check: no usable GPU")
    assert all(n in message for n in names)
    assert refusal(GpuProbe(torch_cuda=True, faiss_gpus=2)) is None


def test_main_refuses_on_a_cpu_machine(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ran = []
    code = gpu_check.main(
        ["--scratch", str(tmp_path / "s"), "--results", str(tmp_path / "r.md")],
        probe=lambda: GpuProbe(torch_cuda=False, faiss_gpus=0),
        run=lambda *args: ran.append(args),
    )
    assert code == 2 and ran == []
    assert "no usable GPU" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_main_fails_when_logs_show_cpu(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def fake_run(scratch: Path, cores: int, epochs: int, train_images: int, gpus: int) -> None:
        assert gpus == 1  # one GPU: never two GPU jobs waiting on each other's lock
        logs = scratch / "results" / "logs"
        logs.mkdir(parents=True)
        (logs / "x.log").write_text(log("00:00", "00:05", "0", "INFO k: faiss device: cpu"))

    code = gpu_check.main(
        ["--scratch", str(tmp_path / "s"), "--results", str(tmp_path / "r.md")],
        probe=lambda: GpuProbe(torch_cuda=True, faiss_gpus=1),
        run=fake_run,
    )
    assert code == 1
    assert "gpu_check FAILED" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_gpu_lines_match_what_the_code_logs() -> None:
    """The regexes read the lines that copydetect.gpu / rule_script / knn really write."""
    root = Path(__file__).resolve().parents[1] / "workflow_scripts"
    assert '"leased GPU(s) %s (locks in %s)"' in (root / "copydetect" / "gpu.py").read_text()
    assert '"releasing GPU(s) %s"' in (root / "copydetect" / "rule_script.py").read_text()
    knn = (root / "copydetect" / "knn.py").read_text()
    assert '"faiss device: gpu"' in knn and '"faiss device: cpu"' in knn
    for script in ("detect_overlays.py", "train_overlay_detector.py", "train_descriptor.py"):
        assert '"torch device: %s"' in (root / script).read_text()


def test_a_real_lease_logs_its_start_and_end(tmp_path: Path) -> None:
    """A process leasing through rule_script logs both ends; parse_job_log reads them."""
    code = (
        "import logging, sys\n"
        "from copydetect.rule_script import LOG_FORMAT, lease_devices\n"
        "logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)\n"
        f"lease_devices(1, {str(tmp_path / 'locks')!r})\n"
    )
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "3,5",  # lease among these names; no GPU is touched
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "workflow_scripts"),
    }
    env.pop("COPYDETECT_GPU_LEASE", None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    job = parse_job_log("job.log", done.stderr)
    assert job.devices == ["3"]
    assert "releasing GPU(s) 3" in done.stderr
    assert job.start is not None and job.end is not None and job.start <= job.end


def pins(path: Path) -> set[str]:
    lines = path.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_gpu_requirements_differ_only_in_faiss() -> None:
    root = Path(__file__).resolve().parents[1]
    cpu, gpu = pins(root / "requirements.txt"), pins(root / "requirements-gpu.txt")
    assert any(p.startswith("faiss-cpu==") for p in cpu)
    assert {p.replace("faiss-cpu==", "faiss-gpu==") for p in cpu} == gpu


def test_main_writes_the_section_when_the_logs_prove_gpu_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_run(scratch: Path, cores: int, epochs: int, train_images: int, gpus: int) -> None:
        results = scratch / "results"
        jobs = {
            "train_overlay_detector": log("00:00", "00:40", "0", "INFO root: torch device: 0"),
            "local_search/queries/s0000/g0000": log(
                "00:41", "00:45", "1", "INFO copydetect.knn: faiss device: gpu"
            ),
            "train_descriptor/trained": log("00:46", "00:56", "1", "INFO root: torch device: cuda"),
        }
        for rel, text in jobs.items():
            for folder, suffix, body in (("logs", ".log", text), ("benchmarks", ".tsv", None)):
                path = results / folder / f"{rel}{suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(body or f"s\tmax_rss\n{4.0 if 'search' in rel else 40.0}\t1\n")
        (results / "images" / "queries").mkdir(parents=True)
        (results / "images" / "queries" / "s0000.h5").write_text("")
        figures = results / "models" / gpu_check.DESCRIPTOR_MODEL / "training.json"
        figures.parent.mkdir(parents=True)
        figures.write_text('{"images_seen": 600}')  # 20 training images × 30 epochs

    monkeypatch.setattr(gpu_check, "count_shard_images", lambda path: 32)
    monkeypatch.setattr(gpu_check, "gpu_name", lambda: "Fake GPU")
    out = tmp_path / "r.md"
    out.write_text("# Benchmark results\n\n## Other (x.py)\n\nkept\n")
    code = gpu_check.main(
        ["--scratch", str(tmp_path / "s"), "--results", str(out), "--epochs", "2"],
        probe=lambda: GpuProbe(torch_cuda=True, faiss_gpus=2),
        run=fake_run,
    )
    text = out.read_text()
    assert code == 0
    assert "## Other (x.py)\n\nkept" in text and gpu_check.HEADING in text
    assert "Fake GPU" in text and "--resources gpu=2" in text
    assert "| train_overlay_detector | 1 | 1000 | 40.00 | 25.0 |" in text  # 500 images × 2 epochs
    assert "| local_search | 1 | 32 | 4.00 | 8.0 |" in text
    assert "local_search 8.0" in text
    assert "| train_descriptor | 1 | 600 | 40.00 | 15.0 |" in text


def test_run_demo_commands_parse_and_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Snakemake accepts run_demo's command line and the config overlay (dry run, no GPU)."""
    commands: list[list[str]] = []
    monkeypatch.setattr(gpu_check.subprocess, "run", lambda cmd, check: commands.append(cmd))
    gpu_check.run_demo(tmp_path, cores=2, epochs=3, train_images=500, gpus=2)
    assert [c[:4] for c in commands] == [
        [sys.executable, "-m", "snakemake", target] for target in ("synthesize_queries", "all")
    ]
    assert commands[1][-2:] == ["--resources", "gpu=2"]
    overlay = yaml.safe_load((tmp_path / "gpu_check.yaml").read_text())
    assert overlay["models"][gpu_check.DESCRIPTOR_MODEL]["backend"] == "train"
    assert gpu_check.DESCRIPTOR_MODEL in overlay["global"]["models"]
    monkeypatch.undo()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "workflow_scripts"),
    }
    done = subprocess.run(
        [*commands[0], "--dry-run", "--quiet"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
