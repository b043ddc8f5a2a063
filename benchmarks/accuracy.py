"""Accuracy of the whole workflow on the wallpaper/Tux Paint benchmark.

Runs the workflow on the benchmark built by ``benchmarks/make_benchmark_data.py`` (references,
copy and distractor queries, training images, ground truth) in ``benchmarks/work/bench_run/``,
times it, and writes the ISC2021 figures of ``results/eval/metrics.json`` (micro-AP, recall at
precision 0.9 and its threshold, recall@1/10), the rules that ran, the job seconds per rule and
a per-edit breakdown (how often a copy whose edit chain contains an operation has its true
reference as the top-1 prediction) into its own section of ``benchmarks/results.md``.

    .venv/bin/python benchmarks/accuracy.py [--cores 2] [--set verify='{ratio: 0.75}'] \\
        [--tag label] [--incremental] [--report-only]

A run starts from an empty run folder unless ``--incremental`` is given, so the wall time is
that of the whole workflow. ``--report-only`` rewrites the section from the last run's outputs.
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from results_file import replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"
HEADING = "## Accuracy on the wallpaper/Tux Paint benchmark (benchmarks/accuracy.py)"
RUN_RECORD = "accuracy_run.json"  # in the run folder: command, wall time, rules of the last run
_RULE_LINE = re.compile(r"^\s*(?:local)?rule (\w+):\s*$")
_ERROR_LINE = re.compile(r"^\s*Error in rule (\w+):|^\s*log: (\S+)")


@dataclass(frozen=True)
class Run:
    """What one workflow run did: its command, exit status, wall time and jobs per rule."""

    command: list[str]
    returncode: int
    seconds: float
    jobs: dict[str, int]  # rule -> jobs executed
    overrides: list[str]
    tag: str
    date: str
    incremental: bool = False  # earlier outputs were kept: only the jobs listed ran


# --- Running the workflow ---


def snakemake_command(
    bench: Path, run_dir: Path, cores: int, overrides: Sequence[str]
) -> list[str]:
    """The workflow on ``bench`` in ``run_dir``; ``overrides`` are ``KEY=YAML`` items.

    The overrides go into a config file rather than ``--config``: Snakemake reads nested values
    given with ``--config`` as strings, which the schema then rejects.
    """
    inputs = {
        "queries": bench / "queries",
        "references": bench / "references",
        "training": bench / "training",
        "ground_truth": bench / "ground_truth.csv",
    }
    settings = {key: str(path.resolve()) for key, path in inputs.items()}
    for item in overrides:
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / "benchmark-config.yaml"
    config_file.write_text(yaml.safe_dump(settings, sort_keys=True))
    return [
        str(ROOT / ".venv" / "bin" / "snakemake"),
        *("-s", "Snakefile", "--directory", str(run_dir)),
        *("--configfile", "config/config.yaml", str(config_file.resolve())),
        *("--cores", str(cores)),
    ]


def run_logged(command: Sequence[str], log_path: Path) -> tuple[int, float, list[str]]:
    """Run ``command`` in the repository root, echoing and saving its output; returns the exit
    status, the wall time in seconds and the output lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    start = time.perf_counter()
    with (
        log_path.open("w", encoding="utf-8") as log,
        subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
            lines.append(line.rstrip("\n"))
    return proc.returncode, time.perf_counter() - start, lines


def executed_rules(lines: Sequence[str]) -> dict[str, int]:
    """Rule -> number of jobs, from Snakemake's ``rule NAME:`` / ``localrule NAME:`` lines."""
    jobs = collections.Counter(m.group(1) for m in map(_RULE_LINE.match, lines) if m)
    return dict(sorted(jobs.items()))


def failure_report(lines: Sequence[str], run_dir: Path, tail: int = 30) -> str:
    """The failed rules and the last lines of each failed job's log file."""
    report = []
    for line in lines:
        match = _ERROR_LINE.match(line)
        if match and match.group(1):
            report.append(f"failed rule: {match.group(1)}")
        elif match and report:
            log_file = run_dir / match.group(2).rstrip(",;")
            report.append(f"--- {log_file} (last {tail} lines)")
            if log_file.is_file():
                report += log_file.read_text(errors="replace").splitlines()[-tail:]
    return "\n".join(report) or "no 'Error in rule' line: see the Snakemake output above"


# --- Reading the outputs ---


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def bench_counts(bench: Path) -> dict[str, int]:
    """References, training images, copy queries and distractor queries of the benchmark."""
    truth = read_csv(bench / "ground_truth.csv")
    copies = sum(bool(row["reference_id"]) for row in truth)
    return {
        "references": sum(1 for _ in (bench / "references").iterdir()),
        "training": sum(1 for _ in (bench / "training").iterdir()),
        "copies": copies,
        "distractors": len(truth) - copies,
    }


def top1(predictions: Path) -> dict[str, str]:
    """Query -> its best-scored reference (ties: the smaller reference id)."""
    best: dict[str, tuple[float, str]] = {}
    for row in read_csv(predictions):
        key = (-float(row["score"]), row["reference_id"])
        if row["query_id"] not in best or key < best[row["query_id"]]:
            best[row["query_id"]] = key
    return {query: ref for query, (_, ref) in best.items()}


def edit_breakdown(edits: Path, best: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Edit operation (and ``N edits``, ``all copies``) -> (copy queries, top-1 correct)."""
    table: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for row in read_csv(edits):
        if not row["reference_id"]:
            continue  # a distractor
        hit = int(best.get(row["query_id"]) == row["reference_id"])
        chain = json.loads(row["edits"])
        keys = sorted({step["op"] for step in chain})
        keys += [f"{len(chain)} edit{'s' if len(chain) != 1 else ''}", "all copies"]
        for key in keys:
            table[key][0] += 1
            table[key][1] += hit
    return {key: (n, hits) for key, (n, hits) in table.items()}


def source_breakdown(bench: Path, best: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Source family of the true reference (the ``plasma__``-style prefix of its source file,
    see ``make_benchmark_data.py``) -> (copy queries, top-1 correct)."""
    family = {
        row["id"]: Path(row["source"]).name.split("__")[0]
        for row in read_csv(bench / "sources.csv")
        if row["role"] == "reference"
    }
    table: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for row in read_csv(bench / "ground_truth.csv"):
        if row["reference_id"]:
            counts = table[family.get(row["reference_id"], "?")]
            counts[0] += 1
            counts[1] += int(best.get(row["query_id"]) == row["reference_id"])
    return {key: (n, hits) for key, (n, hits) in sorted(table.items())}


def distractor_hits(predictions: Path, truth: Path, threshold: float | None) -> tuple[int, int]:
    """(distractor queries with a prediction scored >= threshold, distractor queries)."""
    distractors = {row["query_id"] for row in read_csv(truth) if not row["reference_id"]}
    if threshold is None:
        return 0, len(distractors)
    flagged = {
        row["query_id"]
        for row in read_csv(predictions)
        if row["query_id"] in distractors and float(row["score"]) >= threshold
    }
    return len(flagged), len(distractors)


def job_seconds(run_dir: Path) -> dict[str, float]:
    """Rule -> summed wall seconds of its jobs, from the ``benchmark:`` tables of the rules."""
    totals: dict[str, float] = collections.defaultdict(float)
    root = run_dir / "results" / "benchmarks"
    for table in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        rows = list(csv.DictReader(table.open(encoding="utf-8"), delimiter="\t"))
        totals[table.relative_to(root).parts[0]] += sum(float(r["s"]) for r in rows)
    return dict(sorted(totals.items()))


def branches(run_dir: Path) -> list[str]:
    """Retrieval branches whose outputs exist: local SIFT and each global model."""
    found = []
    if (run_dir / "results" / "search" / "local").is_dir():
        found.append("local SIFT (sift → local_search → local_candidates)")
    global_dir = run_dir / "results" / "search" / "global"
    if global_dir.is_dir():
        models = sorted(p.name for p in global_dir.iterdir() if p.is_dir())
        found += [f"global `{model}` (embed → global_search)" for model in models]
    return found


def machine() -> str:
    """CPU model, cores usable by this process, memory and Python version."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        model = names[0].strip() if names else model
    pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    cores = len(os.sched_getaffinity(0))
    memory = pages * page / 2**30
    return f"{model}, {cores} cores, {memory:.0f} GiB RAM, Python {platform.python_version()}"


# --- The section ---


def fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def section_heading(name: str) -> str:
    """The section's heading: the default run's, or a named variant's (never a prefix of
    another heading, since replace_section finds a section by its heading)."""
    if not name:
        return HEADING
    return HEADING.replace(" (benchmarks/", f", {name} (benchmarks/")


def ablation_lines(run_dir: Path) -> list[str]:
    """Each branch alone against the fused score (results/eval/ablation.csv), as a table."""
    path = run_dir / "results" / "eval" / "ablation.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    lines = [
        "",
        "Each branch alone against the fused score (`results/eval/ablation.csv`: every ranking",
        "keeps the same top-k per query; a branch ranks the pairs by its own calibrated score):",
        "",
        "| ranking | micro-AP | recall@P90 | threshold@P90 | recall@1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        threshold = float(row["threshold_at_p90"]) if row["threshold_at_p90"] else None
        lines.append(
            f"| {row['branch']} | {fmt(float(row['micro_ap']))} "
            f"| {fmt(float(row['recall_at_p90']))} | {fmt(threshold)} "
            f"| {fmt(float(row['recall_at_1']))} |"
        )
    return lines


def render_section(run: Run, run_dir: Path, bench: Path, cores: int, heading: str = HEADING) -> str:
    """The Markdown section: setup, metrics, per-rule time, per-edit table, commands."""
    metrics = json.loads((run_dir / "results" / "eval" / "metrics.json").read_text())
    counts = bench_counts(bench)
    n_queries = counts["copies"] + counts["distractors"]
    build_file = bench / "build.json"
    build = json.loads(build_file.read_text()) if build_file.exists() else {}
    predictions = run_dir / "results" / "predictions.csv"
    best = top1(predictions)
    breakdown = edit_breakdown(bench / "edits.csv", best)
    flagged, n_distractors = distractor_hits(
        predictions, bench / "ground_truth.csv", metrics.get("threshold_at_p90")
    )
    title = f"{heading}\n\n" + (f"Run: **{run.tag}**\n\n" if run.tag else "")
    lines = [
        f"- date: {run.date}; machine: {machine()}; `--cores {cores}`",
        f"- benchmark: {counts['references']} references, {n_queries} queries "
        f"({counts['copies']} edited copies with 1–3 chained edits, "
        f"{counts['distractors']} distractors), {counts['training']} training images",
    ]
    if build:
        used = "; ".join(
            f"{name} {sum(roles.values())} ({', '.join(f'{n} {r}' for r, n in roles.items())})"
            for name, roles in build["used"].items()
        )
        kept = ", ".join(f"{name} {n}" for name, n in build["kept"].items())
        f = build["filters"]
        lines += [
            f"- sources: wallpaper tiles ({f['tile']} px, at most {f['max_tiles']} grid cells per "
            f"wallpaper, flat tiles with gray std < {f['min_std']:g} dropped) and photographic "
            f"Tux Paint stamps (>= {f['min_stamp']} px), near-duplicates removed "
            "(see benchmarks/make_benchmark_data.py)",
            f"- sources used per package: {used}",
            f"- sources kept by the filters (the synthesizer draws from these): {kept}",
        ]
    lines += [
        f"- branches: {'; '.join(branches(run_dir)) or 'none found'} → verify → fuse",
        "- jobs run per rule: "
        + ", ".join(f"{rule} {n}" for rule, n in run.jobs.items() if rule != "all"),
        "- config overrides: "
        + (", ".join(f"`{o}`" for o in run.overrides) if run.overrides else "none"),
        f"- wall time: **{run.seconds:.0f} s** "
        + (
            "for the jobs listed above (an incremental run over an earlier one's outputs)"
            if run.incremental
            else "for the whole workflow from an empty run folder"
        ),
        "- job seconds per rule: "
        + ", ".join(f"{rule} {s:.0f}" for rule, s in job_seconds(run_dir).items()),
        "",
        "| micro-AP | recall@P90 | threshold@P90 | recall@1 | recall@10 | predictions |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| **{fmt(metrics['micro_ap'])}** | **{fmt(metrics['recall_at_p90'])}** "
        f"| {fmt(metrics.get('threshold_at_p90'))} | {fmt(metrics['recall_at_rank1'])} "
        f"| {fmt(metrics['recall_at_rank10'])} | {metrics['n_predictions']} |",
        "",
        f"Distractor queries with a prediction at or above the P90 threshold: "
        f"{flagged}/{n_distractors}.",
        *ablation_lines(run_dir),
        "",
        "Top-1 accuracy of the copy queries by edit (a query counts once for each operation of",
        "its chain, so rows overlap):",
        "",
        "| edit | copy queries | top-1 correct | fraction |",
        "|---|---:|---:|---:|",
    ]
    ops = sorted(k for k in breakdown if not k[0].isdigit() and k != "all copies")
    order = ops + sorted(k for k in breakdown if k[0].isdigit()) + ["all copies"]
    for key in order:
        n, hits = breakdown.get(key, (0, 0))
        lines.append(f"| {key} | {n} | {hits} | {hits / n if n else 0:.2f} |")
    lines += [
        "",
        "Top-1 accuracy of the copy queries by where their reference comes from (smooth vector",
        "wallpapers give SIFT few keypoints; Tux Paint stamps are textured photographs):",
        "",
        "| source | copy queries | top-1 correct | fraction |",
        "|---|---:|---:|---:|",
    ]
    for key, (n, hits) in source_breakdown(bench, best).items():
        lines.append(f"| {key} | {n} | {hits} | {hits / n if n else 0:.2f} |")
    lines += [
        "",
        "Reproduce:",
        "",
        "```bash",
        build.get("command", ".venv/bin/python benchmarks/make_benchmark_data.py"),
        shlex.join([".venv/bin/python", "benchmarks/accuracy.py", *reproduce_args(run)]),
        "# which runs:",
        shlex.join(relative_command(run.command)),
        "```",
    ]
    return title + "\n".join(lines) + "\n"


def reproduce_args(run: Run) -> list[str]:
    args = [f"--set={o}" for o in run.overrides]
    return args + ([f"--tag={run.tag}"] if run.tag else [])  # add --section=… for a variant


def relative_command(command: Sequence[str]) -> list[str]:
    """The command with this checkout's absolute paths made relative to the repository."""
    prefix = str(ROOT) + os.sep
    return [part.replace(prefix, "") for part in command]


# --- Command line ---


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, default=WORK / "bench")
    parser.add_argument("--run-dir", type=Path, default=WORK / "bench_run")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.md")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra --config item for the workflow, e.g. verify='{ratio: 0.75}' (repeatable)",
    )
    parser.add_argument("--tag", default="", help="label of this run in the section")
    parser.add_argument(
        "--forcerun", nargs="+", default=[], metavar="RULE", help="rules to redo (--incremental)"
    )
    parser.add_argument(
        "--section",
        default="",
        help="write a section of its own, e.g. 'with SSCD' (default: the main accuracy section)",
    )
    parser.add_argument(
        "--incremental", action="store_true", help="keep the earlier run's outputs (cached jobs)"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the section from the last run"
    )
    return parser


def execute(args: argparse.Namespace) -> Run | None:
    """Run the workflow (from an empty run folder unless incremental); None on failure."""
    run_dir = args.run_dir.resolve()
    if not args.incremental and run_dir.exists():
        shutil.rmtree(run_dir)
    command = snakemake_command(args.bench, run_dir, args.cores, args.overrides)
    if args.forcerun:  # an incremental run redoing these rules and what follows them
        command += ["--forcerun", *args.forcerun]
    print("running:", shlex.join(command), flush=True)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rc, seconds, lines = run_logged(command, run_dir / "accuracy_run.log")
    if rc != 0:
        print(f"\nworkflow failed (exit {rc}) after {seconds:.0f} s", file=sys.stderr)
        print(failure_report(lines, run_dir), file=sys.stderr)
        return None
    run = Run(
        command,
        rc,
        seconds,
        executed_rules(lines),
        args.overrides,
        args.tag,
        date,
        args.incremental,
    )
    (run_dir / RUN_RECORD).write_text(json.dumps(run.__dict__, indent=2) + "\n")
    return run


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.bench / "ground_truth.csv").exists():
        print(
            f"no benchmark in {args.bench}: run .venv/bin/python benchmarks/make_benchmark_data.py",
            file=sys.stderr,
        )
        return 1
    if args.report_only:
        run = Run(**json.loads((args.run_dir / RUN_RECORD).read_text()))
    else:
        run = execute(args)
        if run is None:
            return 1
    heading = section_heading(args.section)
    section = render_section(run, args.run_dir.resolve(), args.bench, args.cores, heading)
    replace_section(args.results, heading, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
