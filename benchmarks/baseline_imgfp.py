"""An imgFp-style copy-detection baseline, and its comparison with the workflow.

The yardstick of issue 13: what a plain script does on the same benchmark, without the workflow.

1. OpenCV SIFT on each image scaled to a short side of 300 px, RootSIFT descriptors (as imgFp).
2. Every descriptor of a query and of its left-right mirror votes for the reference image of its
   nearest reference descriptor (faiss ``IndexFlatL2``, exact 1-NN over all references).
3. The 30 references with most votes (both views together) are the shortlist.
4. Score = RANSAC inlier count (``cv2.findHomography``) of Lowe's ratio-test matches between the
   query (or its mirror, whichever fits better) and the shortlisted reference.

``predictions.csv`` (query_id,reference_id,score) is scored with ``copydetect.metrics`` (the
workflow's ISC2021 micro-AP / recall@P90), the only import from the workflow's package.

    .venv/bin/python benchmarks/baseline_imgfp.py [--bench DIR] [--out DIR]
    .venv/bin/python benchmarks/baseline_imgfp.py --compare [--cores 2]

``--compare`` runs the workflow (default config, from an empty run folder) and then the baseline,
measures the CPU seconds of each (``getrusage`` of this process and its children, so every
Snakemake job and the baseline's reference side count) and writes a section of
``benchmarks/results.md``.
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime
import json
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"
HEADING = "## Workflow vs an imgFp-style baseline (benchmarks/baseline_imgfp.py)"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
SHORT_SIDE = 300  # imgFp's working resolution
SHORTLIST = 30  # references verified per query
RATIO = 0.8  # Lowe's ratio test
RANSAC_PIXELS = 5.0  # reprojection threshold of findHomography
MIN_MATCHES = 4  # a homography needs 4 correspondences


@dataclass
class Features:
    """SIFT of one image: keypoint coordinates [n, 2] and float32 RootSIFT descriptors [n, 128]."""

    points: np.ndarray
    descriptors: np.ndarray


@dataclass(frozen=True)
class Prediction:
    query: str
    reference: str
    score: float


@dataclass(frozen=True)
class CpuRun:
    """CPU and wall seconds of one measured step."""

    cpu_s: float
    wall_s: float


# --- Features ---


def list_images(folder: Path) -> dict[str, Path]:
    """Image id (file stem) -> path, sorted by id."""
    paths = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    return {p.stem: p for p in sorted(paths, key=lambda p: p.stem)}


def resize_short_side(image: np.ndarray, short_side: int = SHORT_SIDE) -> np.ndarray:
    """Scale so the short side is ``short_side`` at most (never upscaled)."""
    scale = short_side / min(image.shape[:2])
    if scale >= 1.0:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT: L1-normalise, square root (unit L2 norm)."""
    d = descriptors.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-7)
    return np.sqrt(d)


def sift_features(gray: np.ndarray, sift: cv2.SIFT) -> Features:
    """RootSIFT of a grayscale image (already at working size)."""
    keypoints, descriptors = sift.detectAndCompute(gray, None)
    if descriptors is None or len(keypoints) == 0:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    points = np.array([kp.pt for kp in keypoints], np.float32)
    return Features(points, root_sift(descriptors))


def image_features(path: Path, sift: cv2.SIFT) -> tuple[Features, Features]:
    """Features of an image and of its left-right mirror (the mirror's from flipped pixels)."""
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        empty = Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
        return empty, empty
    gray = resize_short_side(gray)
    return sift_features(gray, sift), sift_features(cv2.flip(gray, 1), sift)


# --- Votes and shortlist ---


@dataclass
class ReferenceIndex:
    """All reference descriptors in one exact faiss index, with the image each belongs to."""

    index: object  # faiss.IndexFlatL2
    owner: np.ndarray  # int [n_descriptors] -> position in ``ids``
    ids: list[str]


def build_index(references: dict[str, Features]) -> ReferenceIndex:
    import faiss

    ids = list(references)
    index = faiss.IndexFlatL2(128)
    owner = [np.full(len(references[r].descriptors), i) for i, r in enumerate(ids)]
    stacked = [references[r].descriptors for r in ids]
    if stacked:
        index.add(np.ascontiguousarray(np.concatenate(stacked), dtype=np.float32))
    return ReferenceIndex(index, np.concatenate(owner) if owner else np.zeros(0, int), ids)


def vote(index: ReferenceIndex, views: Iterable[Features]) -> collections.Counter[str]:
    """Reference -> votes: each descriptor of each view votes for its nearest neighbour's image."""
    votes: collections.Counter[str] = collections.Counter()
    for view in views:
        if len(view.descriptors) == 0 or index.index.ntotal == 0:
            continue
        _, nearest = index.index.search(np.ascontiguousarray(view.descriptors), 1)
        for position, count in collections.Counter(index.owner[nearest[:, 0]].tolist()).items():
            votes[index.ids[position]] += count
    return votes


def shortlist(votes: collections.Counter[str], size: int = SHORTLIST) -> list[str]:
    """The ``size`` references with most votes (ties: smaller id first)."""
    return [ref for ref, _ in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]


# --- Verification ---


def ratio_matches(query: Features, reference: Features, ratio: float = RATIO) -> np.ndarray:
    """(query, reference) index pairs passing Lowe's ratio test, as an int array [m, 2]."""
    if len(query.descriptors) < 1 or len(reference.descriptors) < 2:
        return np.zeros((0, 2), int)
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    pairs = matcher.knnMatch(query.descriptors, reference.descriptors, k=2)
    kept = [(m.queryIdx, m.trainIdx) for m, n in pairs if m.distance < ratio * n.distance]
    return np.array(kept, int).reshape(-1, 2)


def inliers(query: Features, reference: Features) -> int:
    """RANSAC homography inliers among the ratio-test matches (0 when no fit)."""
    matches = ratio_matches(query, reference)
    if len(matches) < MIN_MATCHES:
        return 0
    src = query.points[matches[:, 0]].reshape(-1, 1, 2)
    dst = reference.points[matches[:, 1]].reshape(-1, 1, 2)
    _, mask = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_PIXELS)
    return 0 if mask is None else int(mask.sum())


def score_query(
    query_id: str,
    views: Sequence[Features],
    index: ReferenceIndex,
    references: dict[str, Features],
) -> list[Prediction]:
    """Shortlist by votes, then score each candidate by its best view's inlier count."""
    predictions = []
    for ref in shortlist(vote(index, views)):
        score = max(inliers(view, references[ref]) for view in views)
        if score > 0:
            predictions.append(Prediction(query_id, ref, float(score)))
    return predictions


# --- Running the baseline ---


def extract_all(images: dict[str, Path], mirrors: bool) -> dict[str, tuple[Features, ...]]:
    """Image id -> (features,) or (features, mirror features)."""
    cv2.setRNGSeed(0)
    sift = cv2.SIFT_create()
    out = {}
    for image_id, path in images.items():
        plain, mirror = image_features(path, sift)
        out[image_id] = (plain, mirror) if mirrors else (plain,)
    return out


def run_baseline(bench: Path) -> list[Prediction]:
    """Predictions of every query of ``bench`` against its references."""
    references = {r: f[0] for r, f in extract_all(list_images(bench / "references"), False).items()}
    queries = extract_all(list_images(bench / "queries"), True)
    index = build_index(references)
    predictions: list[Prediction] = []
    for done, (query_id, views) in enumerate(queries.items(), 1):
        cv2.setRNGSeed(0)  # RANSAC's sampling: same inputs, same scores
        predictions += score_query(query_id, views, index, references)
        if done % 100 == 0:
            print(f"baseline: {done}/{len(queries)} queries", flush=True)
    return predictions


def write_predictions(predictions: Sequence[Prediction], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["query_id", "reference_id", "score"])
        for p in predictions:
            writer.writerow([p.query, p.reference, f"{p.score:g}"])


def evaluate(predictions: Path, ground_truth: Path) -> dict[str, float | int | None]:
    """ISC2021 figures, computed exactly as the workflow's eval rule does."""
    from copydetect import metrics

    truth = metrics.read_ground_truth(ground_truth)
    found = metrics.evaluate(truth.matches, metrics.read_predictions(predictions), truth.query_ids)
    return found.to_dict()


# --- CPU accounting ---


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children so far."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def measured(step, *args) -> tuple[object, CpuRun]:  # noqa: ANN001 - any callable
    """``step(*args)`` and the CPU/wall seconds it took (children included)."""
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    result = step(*args)
    return result, CpuRun(cpu_seconds() - cpu0, time.perf_counter() - wall0)


# --- The workflow side ---

# The last line of every job's log (copydetect.rule_script.CPU_LINE): getrusage of the job's
# process and its reaped children, interpreter start-up and imports included.
JOB_CPU = re.compile(r"job CPU seconds: ([\d.]+) user, ([\d.]+) system")


@dataclass(frozen=True)
class StepCpu:
    """CPU seconds of one workflow step: the jobs whose logs share a folder (rule ``sift`` logs
    to ``logs/sift/``, ``embed_vlad`` to ``logs/embed/``)."""

    step: str
    jobs: int
    cpu_s: float


def job_cpu_seconds(log: Path) -> float | None:
    """The CPU seconds a job's log ends with, None when it has no such line."""
    found = JOB_CPU.findall(log.read_text(errors="replace"))
    return float(found[-1][0]) + float(found[-1][1]) if found else None


def step_cpu(results: Path) -> list[StepCpu]:
    """CPU per step of a finished run from its job logs (``results/logs``), largest first.

    The step is a log's first folder under ``logs/`` (its stem for a log directly there); logs
    without a CPU line (jobs that failed before writing one) are left out.
    """
    totals: dict[str, list[float]] = collections.defaultdict(list)
    logs = results / "logs"
    for log in sorted(logs.rglob("*.log")) if logs.is_dir() else []:
        cpu = job_cpu_seconds(log)
        if cpu is not None:
            parts = log.relative_to(logs).parts
            totals[parts[0] if len(parts) > 1 else log.stem].append(cpu)
    steps = [StepCpu(step, len(cpus), sum(cpus)) for step, cpus in totals.items()]
    return sorted(steps, key=lambda s: (-s.cpu_s, s.step))


def workflow_command(bench: Path, run_dir: Path, cores: int) -> list[str]:
    """The accuracy benchmark's command (default config) with this interpreter's snakemake."""
    sys.path.insert(0, str(Path(__file__).parent))
    from accuracy import snakemake_command

    command = snakemake_command(bench, run_dir, cores, [])
    command[0] = str(Path(sys.executable).with_name("snakemake"))
    return command


def run_workflow(command: Sequence[str], run_dir: Path) -> int:
    """Run the workflow (``run_dir`` emptied beforehand), its output in ``compare_run.log``."""
    with (run_dir / "compare_run.log").open("w") as log:
        return subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True)
    return out.stdout.decode().strip() or "unknown"


# --- The section ---


def machine() -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from accuracy import machine as describe

    return describe()


def metric_row(name: str, m: dict, cpu: CpuRun, n_queries: int) -> str:
    return (
        f"| {name} | **{m['micro_ap']:.4f}** | {m['recall_at_p90']:.4f} "
        f"| {m['recall_at_rank1']:.4f} | {m['n_predictions']} | {cpu.cpu_s:.0f} | {cpu.wall_s:.0f} "
        f"| **{cpu.cpu_s / n_queries:.3f}** |"
    )


def step_table(record: dict) -> list[str]:
    """Where the workflow's CPU went: per step from the job logs, the rest is Snakemake's own
    (planning, scheduling, benchmark sampling) and anything that ran outside a job."""
    steps = [StepCpu(**s) for s in record.get("workflow_steps", [])]
    if not steps:
        return []
    n, total = record["n_queries"], record["workflow_cpu"]["cpu_s"]
    rows = [(s.step, str(s.jobs), s.cpu_s) for s in steps]
    rows.append(("Snakemake itself and outside jobs", "", total - sum(s.cpu_s for s in steps)))
    lines = [
        "",
        "Workflow CPU by step (each job's log ends with its getrusage CPU seconds, start-up and "
        "worker processes included):",
        "",
        "| step | jobs | CPU s | share | CPU s / query |",
        "|---|---:|---:|---:|---:|",
    ]
    for step, jobs, cpu in rows:
        lines.append(f"| {step} | {jobs} | {cpu:.1f} | {cpu / total:.0%} | {cpu / n:.3f} |")
    lines.append(
        f"| **total** | {sum(s.jobs for s in steps)} | {total:.1f} | 100% | {total / n:.3f} |"
    )
    return lines


def render(record: dict) -> str:
    """The results.md section from a comparison record (see ``compare``)."""
    n = record["n_queries"]
    wf, bl = CpuRun(**record["workflow_cpu"]), CpuRun(**record["baseline_cpu"])
    ratio = (wf.cpu_s / n) / (bl.cpu_s / n)
    lines = [
        HEADING,
        "",
        f"- date: {record['date']}; machine: {record['machine']}; commit {record['commit']}",
        f"- benchmark: {record['n_references']} references, {n} queries "
        "(benchmarks/work/bench, built by benchmarks/make_benchmark_data.py)",
        "- workflow: default config, `--cores "
        f"{record['cores']}`, from an empty run folder; CPU = getrusage(RUSAGE_CHILDREN) "
        "around the snakemake process tree (every job, planning included)",
        f"- baseline: OpenCV SIFT at short side {SHORT_SIDE}, RootSIFT, faiss IndexFlatL2 1-NN "
        f"votes of the query and its mirror over all reference descriptors, shortlist "
        f"{SHORTLIST}, score = findHomography RANSAC inliers of ratio-{RATIO} matches (best "
        "view); CPU = getrusage self+children of the whole step, reference side included",
        "- both scored by `copydetect.metrics` (ISC2021 micro-AP, recall at precision 0.9)",
        "",
        "| system | micro-AP | recall@P90 | recall@1 | predictions | CPU s | wall s "
        "| CPU s / query |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        metric_row("workflow (default config)", record["workflow_metrics"], wf, n),
        metric_row("imgFp-style baseline", record["baseline_metrics"], bl, n),
        "",
        f"CPU per query, workflow / baseline: **{ratio:.3f}** (the issue's target is ≤ 0.100).",
        *step_table(record),
        "",
        "Reproduce:",
        "",
        "```bash",
        record["command"],
        "# which runs, one after the other:",
        record["workflow_command"],
        ".venv/bin/python benchmarks/baseline_imgfp.py --bench benchmarks/work/bench "
        "--out benchmarks/work/baseline_imgfp",
        "```",
    ]
    return "\n".join(lines) + "\n"


def compare(args: argparse.Namespace) -> int:
    """Workflow then baseline on the same data, one process; writes the record and section."""
    from results_file import replace_section

    if args.run_dir.exists():  # from an empty run folder: the whole workflow's CPU
        shutil.rmtree(args.run_dir)
    command = workflow_command(args.bench, args.run_dir.resolve(), args.cores)
    print("workflow:", shlex.join(command), flush=True)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rc, wf_cpu = measured(run_workflow, command, args.run_dir.resolve())
    if rc != 0:
        print(f"workflow failed (exit {rc}): see {args.run_dir}/compare_run.log", file=sys.stderr)
        return 1
    print(f"workflow: {wf_cpu}", flush=True)
    predictions, bl_cpu = measured(run_baseline, args.bench)
    print(f"baseline: {bl_cpu}", flush=True)
    write_predictions(predictions, args.out / "predictions.csv")
    truth = args.bench / "ground_truth.csv"
    prefix = str(ROOT) + "/"
    record = {
        "date": date,
        "machine": machine(),
        "commit": git_commit(),
        "cores": args.cores,
        "n_queries": len(list_images(args.bench / "queries")),
        "n_references": len(list_images(args.bench / "references")),
        "workflow_cpu": asdict(wf_cpu),
        "workflow_steps": [asdict(s) for s in step_cpu(args.run_dir / "results")],
        "baseline_cpu": asdict(bl_cpu),
        "workflow_metrics": evaluate(args.run_dir / "results" / "predictions.csv", truth),
        "baseline_metrics": evaluate(args.out / "predictions.csv", truth),
        "command": f".venv/bin/python benchmarks/baseline_imgfp.py --compare --cores {args.cores}",
        "workflow_command": shlex.join(part.replace(prefix, "") for part in command),
    }
    (args.out / "compare.json").write_text(json.dumps(record, indent=2) + "\n")
    section = render(record)
    replace_section(args.results, HEADING, section)
    print(section)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, default=WORK / "bench")
    parser.add_argument("--out", type=Path, default=WORK / "baseline_imgfp")
    parser.add_argument("--run-dir", type=Path, default=WORK / "baseline_compare_run")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.md")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--compare", action="store_true", help="run the workflow, then this")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the section from --out/compare.json"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report_only:
        from results_file import replace_section

        record = json.loads((args.out / "compare.json").read_text())
        replace_section(args.results, HEADING, render(record))
        return 0
    if args.compare:
        return compare(args)
    predictions, cpu = measured(run_baseline, args.bench)
    write_predictions(predictions, args.out / "predictions.csv")
    n_queries = len(list_images(args.bench / "queries"))
    print(json.dumps(evaluate(args.out / "predictions.csv", args.bench / "ground_truth.csv")))
    per_query = cpu.cpu_s / n_queries
    print(f"CPU {cpu.cpu_s:.1f} s, wall {cpu.wall_s:.1f} s, {per_query:.3f} CPU s/query")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
