"""Prove the GPU path on a CUDA machine: ``make gpu-check`` (builds ``.venv-gpu`` first).

1. Refuses (exit 2, one clear line) unless torch sees CUDA and faiss-gpu sees a GPU.
2. Runs the demo (``config/demo.yaml``: ``synthesize_queries``, then the workflow) in a scratch
   folder with ``--resources gpu=2`` (``gpu=1`` on a one-GPU machine) and the default YOLO
   recipe trained for a few epochs (``overlay.detector: train``) and the descriptor's GPU recipe
   (``models.trained: {backend: train}``, ResNet-50 SSCD-style, a few epochs on the demo's
   training images, then embedded and searched as a third global model), so torch (YOLO
   train/detect, descriptor training and embedding) and faiss (searches) all run.
3. Reads the job logs: every GPU job logs its lease (``leased GPU(s) …``), its end (``releasing
   GPU(s) …``) and the device torch / faiss used (``torch device: …``, ``faiss device: …``).
   Asserts torch and faiss ran on a GPU, no leased job fell back to the CPU, and jobs whose
   lease intervals overlap held disjoint devices.
4. Writes images/s per GPU stage (Snakemake benchmark tsv ``s`` over the images of each job's
   shard) and search queries/s to its section of ``benchmarks/results.md``.

    .venv-gpu/bin/python benchmarks/gpu_check.py [--cores 16] [--epochs 3] [--scratch DIR]

The parsing and checks are small functions tested on CPU with synthetic logs
(tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from results_file import replace_section

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## GPU check (benchmarks/gpu_check.py)"
# Stages whose rules declare resources: gpu (rules/*.smk); search stages report queries/s.
GPU_STAGES = (
    "embed",
    "augment_references",
    "global_search",
    "local_search",
    "train_overlay_detector",
    "train_descriptor",
    "detect_overlays",
)
# The trained descriptor's model name in the check's config overlay.
DESCRIPTOR_MODEL = "trained"
SEARCH_STAGES = ("global_search", "local_search")

_TIME = r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
LEASE_RE = re.compile(_TIME + r" .*(?:leased GPU\(s\) |using GPU\(s\) )(?P<devices>[^ ]+)")
RELEASE_RE = re.compile(_TIME + r" .*releasing GPU\(s\) (?P<devices>[^ ]+)")
TORCH_RE = re.compile(r"torch device: (?P<device>\S+)")
FAISS_RE = re.compile(r"faiss device: (?P<device>\S+)")
ANY_TIME_RE = re.compile(r"^" + _TIME, re.MULTILINE)


class GpuCheckError(RuntimeError):
    """The GPU check failed: the message says what was expected and what the logs showed."""


@dataclass(frozen=True)
class GpuProbe:
    """What this machine offers: torch's CUDA and faiss-gpu's device count."""

    torch_cuda: bool
    faiss_gpus: int


def probe_gpus() -> GpuProbe:
    """Ask torch and faiss (imports both: call it in the checking process, never in a job)."""
    import faiss
    import torch

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return GpuProbe(torch_cuda=torch.cuda.is_available(), faiss_gpus=gpus)


def refusal(probe: GpuProbe) -> str | None:
    """Why the check cannot run here, or None when torch and faiss both see a GPU."""
    problems = []
    if not probe.torch_cuda:
        problems.append("torch.cuda.is_available() is False")
    if probe.faiss_gpus <= 0:
        problems.append("faiss.get_num_gpus() is 0 (faiss-gpu from requirements-gpu.txt needed)")
    if not problems:
        return None
    return "gpu_check: no usable GPU: " + "; ".join(problems) + ". Run it on a CUDA machine."


@dataclass
class JobLog:
    """One job's GPU facts from its log; ``start``/``end`` bound its lease."""

    name: str
    devices: list[str] = field(default_factory=list)
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    torch_devices: list[str] = field(default_factory=list)
    faiss_devices: list[str] = field(default_factory=list)

    @property
    def leased(self) -> bool:
        return bool(self.devices)


def _time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f")


def parse_job_log(name: str, text: str) -> JobLog:
    """The lease (devices, start, end) and the torch/faiss devices named in one job log.

    A lease without its ``releasing`` line (a job killed before atexit) ends at the log's last
    timestamp, so it still takes part in the overlap check.
    """
    job = JobLog(name)
    if lease := LEASE_RE.search(text):
        job.devices = [d for d in lease["devices"].split(",") if d]
        job.start = _time(lease["time"])
        release = RELEASE_RE.search(text)
        stamps = ANY_TIME_RE.findall(text)
        job.end = _time(release["time"] if release else stamps[-1])
    job.torch_devices = TORCH_RE.findall(text)
    job.faiss_devices = FAISS_RE.findall(text)
    return job


def is_gpu_torch_device(device: str) -> bool:
    """``cuda``, ``cuda:N`` or ultralytics' bare index ``N``; ``cpu`` is not."""
    return device.startswith("cuda") or device.isdigit()


def overlapping_shared(jobs: Sequence[JobLog]) -> list[tuple[str, str, list[str]]]:
    """Pairs of leased jobs whose intervals overlap and that held a device in common."""
    leased = [j for j in jobs if j.leased and j.start is not None and j.end is not None]
    clashes = []
    for i, a in enumerate(leased):
        for b in leased[i + 1 :]:
            # Touching intervals (one ends as the other starts) are not concurrent.
            if a.start < b.end and b.start < a.end:  # type: ignore[operator]
                shared = sorted(set(a.devices) & set(b.devices))
                if shared:
                    clashes.append((a.name, b.name, shared))
    return clashes


def max_concurrent(jobs: Sequence[JobLog]) -> int:
    """The most leases held at one time (1 = the GPU jobs never overlapped)."""
    events = sorted(
        [(j.start, 1) for j in jobs if j.leased] + [(j.end, -1) for j in jobs if j.leased],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def check_gpu_use(jobs: Sequence[JobLog]) -> list[str]:
    """What the logs fail to show; empty when torch and faiss ran on GPUs as leased."""
    problems = []
    leased = [j for j in jobs if j.leased]
    if not leased:
        problems.append("no job log has a 'leased GPU(s)' line")
    if not any(is_gpu_torch_device(d) for j in jobs for d in j.torch_devices):
        problems.append("no job logged 'torch device: cuda…'")
    if not any(d == "gpu" for j in jobs for d in j.faiss_devices):
        problems.append("no job logged 'faiss device: gpu'")
    for j in leased:
        cpu = [d for d in j.torch_devices if not is_gpu_torch_device(d)]
        cpu += [f"faiss {d}" for d in j.faiss_devices if d != "gpu"]
        if cpu:
            problems.append(f"{j.name} leased GPU(s) {','.join(j.devices)} but ran on {cpu}")
    for a, b, shared in overlapping_shared(jobs):
        problems.append(f"{a} and {b} ran at the same time on GPU(s) {','.join(shared)}")
    return problems


@dataclass(frozen=True)
class JobTiming:
    """One job's wall seconds (Snakemake benchmark ``s``) and the images it processed."""

    stage: str
    images: int
    seconds: float


@dataclass(frozen=True)
class StageThroughput:
    stage: str
    jobs: int
    images: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def read_benchmark_seconds(tsv: Path) -> float:
    """The ``s`` column of a Snakemake benchmark file (first repeat)."""
    header, values = tsv.read_text().splitlines()[:2]
    return float(values.split("\t")[header.split("\t").index("s")])


def job_shard(relative: Path) -> tuple[str, str | None, str | None]:
    """(stage, image set, shard) of a benchmark file path below ``benchmarks/``.

    ``embed/vlad/queries/s0000.tsv`` → (embed, queries, s0000); ``local_search/crops_local/
    s0001/g0000.tsv`` → (local_search, crops_local, s0001); a job of no shard → (stage, None,
    None). The image set of crop views is the crop shard itself; STAGE_SETS gives the others.
    """
    parts = relative.with_suffix("").parts
    stage = parts[0]
    shard = next((p for p in parts[1:] if re.fullmatch(r"s\d+", p)), None)
    sets = [p for p in parts[1:] if p in IMAGE_SETS]
    image_set = sets[-1] if sets else STAGE_SETS.get(stage)
    if image_set == "queries_mirrored":
        image_set = "queries"
    return stage, image_set, shard


# The image set of stages whose paths name none (rules/detect.smk, rules/embed.smk).
STAGE_SETS = {"detect_overlays": "queries", "augment_references": "references"}
IMAGE_SETS = (
    "queries",
    "queries_mirrored",
    "references",
    "training",
    "crops_global",
    "crops_local",
)


def stage_throughput(timings: Iterable[JobTiming]) -> list[StageThroughput]:
    """Images and seconds summed per stage (in GPU_STAGES order, others after)."""
    totals: dict[str, list[float]] = {}
    for t in timings:
        row = totals.setdefault(t.stage, [0, 0, 0.0])
        row[0] += 1
        row[1] += t.images
        row[2] += t.seconds
    order = {s: i for i, s in enumerate(GPU_STAGES)}
    return [
        StageThroughput(stage, int(n), int(images), seconds)
        for stage, (n, images, seconds) in sorted(
            totals.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])
        )
    ]


def collect_timings(
    results: Path,
    leased: set[str],
    count_images: Callable[[Path], int],
    trained_images: Mapping[str, int] | None = None,
) -> list[JobTiming]:
    """A JobTiming per benchmark file of a job that leased a GPU (``leased``: log paths below
    ``logs/`` without ``.log``, the same as the benchmark paths below ``benchmarks/``).

    Images: those of the job's image shard; for a training stage, ``trained_images[stage]``
    (the images it went through: training images × epochs; a descriptor image's two views
    count once).
    """
    trained_images = trained_images or {}
    timings = []
    bench = results / "benchmarks"
    for tsv in sorted(bench.rglob("*.tsv")):
        relative = tsv.relative_to(bench)
        if str(relative.with_suffix("")) not in leased:
            continue
        stage, image_set, shard = job_shard(relative)
        if stage in trained_images:
            images = trained_images[stage]
        elif image_set is None or shard is None:
            continue
        else:
            shard_file = results / "images" / image_set / f"{shard}.h5"
            images = count_images(shard_file) if shard_file.exists() else 0
        timings.append(JobTiming(stage, images, read_benchmark_seconds(tsv)))
    return timings


def format_section(
    probe: GpuProbe,
    device_name: str,
    settings: RunSettings,
    jobs: Sequence[JobLog],
    stages: Sequence[StageThroughput],
) -> str:
    """The results.md section: the machine, the leases, images/s per stage, queries/s."""
    leased = [j for j in jobs if j.leased]
    devices = sorted({d for j in leased for d in j.devices})
    lines = [
        HEADING,
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {device_name} "
        f"(faiss sees {probe.faiss_gpus} GPU(s)), `--cores {settings.cores} "
        f"--resources gpu={settings.gpus}`, demo config with the "
        f"default YOLO recipe trained for {settings.epochs} epochs on {settings.train_images} "
        "composed images and the descriptor's default (GPU) recipe trained for "
        f"{settings.epochs} epochs on the demo's training images (`models.{DESCRIPTOR_MODEL}`, "
        "a third global model; its images/s count each image once, both views in it). "
        f"{len(leased)} GPU jobs leased device(s) {', '.join(devices)}; at most "
        f"{max_concurrent(jobs)} held leases at once, never sharing a device.",
        "",
        "| stage | jobs | images | seconds | images/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in stages:
        lines.append(
            f"| {s.stage} | {s.jobs} | {s.images} | {s.seconds:.2f} | {s.per_second:.1f} |"
        )
    search = [s for s in stages if s.stage in SEARCH_STAGES]
    if search:
        lines.append("")
        lines.append(
            "Search queries/s (query images over the summed job seconds): "
            + "; ".join(f"{s.stage} {s.per_second:.1f}" for s in search)
            + "."
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RunSettings:
    """How the demo was run: cores, concurrent GPU jobs, detector epochs and training images."""

    cores: int
    gpus: int
    epochs: int
    train_images: int


def read_job_logs(logs: Path) -> list[JobLog]:
    return [
        parse_job_log(str(p.relative_to(logs)), p.read_text()) for p in sorted(logs.rglob("*.log"))
    ]


def run_demo(scratch: Path, cores: int, epochs: int, train_images: int, gpus: int) -> None:
    """The demo in ``scratch`` (like ``make demo``), the detector trained for ``epochs``, at most
    ``gpus`` GPU jobs at once."""
    overlay = {
        "gpu": {"lock_dir": str(scratch / "gpu-locks")},
        # The default local index (ivf) searches on CPU; the exact flat scan is the local path
        # that runs on faiss-gpu, so the check takes it.
        "local": {"index": {"type": "flat"}},
        # The descriptor's default (GPU) recipe, a few epochs, as a third global model.
        "models": {DESCRIPTOR_MODEL: {"backend": "train", "train": {"epochs": epochs}}},
        "global": {"models": ["vlad", "layout", DESCRIPTOR_MODEL]},
        "overlay": {
            "detector": "train",
            "train": {"epochs": epochs},
            "dataset": {"train_images": train_images, "val_images": max(train_images // 10, 10)},
        },
    }
    (scratch / "gpu_check.yaml").write_text(yaml.safe_dump(overlay))
    # python -m: works also where snakemake was pip-installed with --target (no bin/ script).
    snakemake = [sys.executable, "-m", "snakemake"]
    options = [
        "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(scratch),
        "--configfile", str(ROOT / "config" / "demo.yaml"), str(scratch / "gpu_check.yaml"),
        "--cores", str(cores),
        "--resources", f"gpu={gpus}",
    ]  # fmt: skip
    # Targets first: --configfile and --resources take every word after them.
    subprocess.run([*snakemake, "synthesize_queries", *options], check=True)
    subprocess.run([*snakemake, "all", *options], check=True)


def descriptor_images(results: Path) -> int:
    """Images the descriptor's training went through (its training.json), 0 if it did not run."""
    import json

    from copydetect.descriptor_recipe import METRICS_NAME

    figures = results / "models" / DESCRIPTOR_MODEL / METRICS_NAME
    return json.loads(figures.read_text())["images_seen"] if figures.exists() else 0


def count_shard_images(path: Path) -> int:
    from copydetect.shards import read_shard_ids

    return len(read_shard_ids(path))


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def main(
    argv: Sequence[str] | None = None,
    probe: Callable[[], GpuProbe] = probe_gpus,
    run: Callable[[Path, int, int, int, int], None] = run_demo,
) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=500)
    parser.add_argument("--scratch", type=Path, help="kept; default: a temporary folder")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.md")
    args = parser.parse_args(argv)

    found = probe()
    if (why := refusal(found)) is not None:
        print(why, file=sys.stderr)
        return 2
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    scratch.mkdir(parents=True, exist_ok=True)
    # gpu=2 where two GPUs exist; on one GPU, gpu=1: a second GPU job would only wait on the
    # lock, and fail after the lease's 600 s wait if the other (training) ran longer.
    gpus = min(2, found.faiss_gpus)
    run(scratch, args.cores, args.epochs, args.train_images, gpus)
    results = scratch / "results"
    jobs = read_job_logs(results / "logs")
    if problems := check_gpu_use(jobs):
        print("gpu_check FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    leased = {str(Path(j.name).with_suffix("")) for j in jobs if j.leased}
    trained = {
        "train_overlay_detector": args.train_images * args.epochs,
        "train_descriptor": descriptor_images(results),
    }
    stages = stage_throughput(collect_timings(results, leased, count_shard_images, trained))
    settings = RunSettings(args.cores, gpus, args.epochs, args.train_images)
    section = format_section(found, gpu_name(), settings, jobs, stages)
    replace_section(args.results, HEADING, section)
    print(section)
    if args.scratch is None:
        shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
