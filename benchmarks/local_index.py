"""Local index on the benchmark: the default inverted file (ivf) vs the exact flat search.

Issue 13 makes the scalable index the default only if it holds accuracy: candidate recall (the
true reference among a query's local candidates, either view) within 0.5 points of the exact
search, and micro-AP within 0.005. One run of the workflow with the default config from an empty
folder, then copies of it rerun with one override each (the exact flat index, other nprobe
values): Snakemake reruns only the local searches and what follows them, so the rows differ only
in the local index. CPU seconds are the jobs' own (``benchmark:`` files).

    .venv/bin/python benchmarks/local_index.py            # writes a section of results.md
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import machine, run_logged, snakemake_command  # noqa: E402
from results_file import replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"
HEADING = "## Local index: inverted file vs exact search (benchmarks/local_index.py)"


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]  # KEY=YAML items on top of the default config


@dataclass(frozen=True)
class Outcome:
    variant: Variant
    micro_ap: float
    recall_p90: float
    candidate_recall: float
    search_cpu: float  # local_search jobs
    index_cpu: float  # fit_local_index + index_local_shard jobs
    cells: str  # what the searches logged about the index


def true_pairs(ground_truth: Path) -> set[tuple[str, str]]:
    with ground_truth.open() as f:
        return {(r["query_id"], r["reference_id"]) for r in csv.DictReader(f) if r["reference_id"]}


def candidate_pairs(run: Path) -> set[tuple[str, str]]:
    """(query, reference) pairs among the local candidates of the queries and their mirrors."""
    pairs = set()
    for view in ("queries", "queries_mirrored"):
        for path in sorted((run / "results" / "search" / "local" / view).glob("*.candidates.csv")):
            with path.open() as f:
                pairs |= {(r["query_id"], r["reference_id"]) for r in csv.DictReader(f)}
    return pairs


def candidate_recall(run: Path, truth: set[tuple[str, str]]) -> float:
    return len(truth & candidate_pairs(run)) / len(truth)


def cpu_seconds(run: Path, *rules: str) -> float:
    """Sum of the cpu_time column of the rules' benchmark files."""
    total = 0.0
    for rule in rules:
        bench = run / "results" / "benchmarks"
        files = [*bench.glob(f"{rule}/**/*.tsv"), *bench.glob(f"{rule}.tsv")]
        for path in files:
            with path.open() as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            total += sum(float(r["cpu_time"]) for r in rows)
    return total


def index_note(run: Path) -> str:
    logs = sorted((run / "results" / "logs" / "local_search").rglob("*.log"))
    for line in logs[0].read_text().splitlines() if logs else []:
        if "ivf:" in line:
            return line.split("ivf:", 1)[1].strip()
    return "exact (every reference descriptor)"


def run_variant(base: Path, run: Path, variant: Variant, bench: Path, cores: int) -> None:
    """The workflow in ``run``: from empty for the base, else from a copy of the base's run."""
    if run != base:
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base, run, symlinks=True)  # copy2 keeps mtimes: only the change reruns
    command = snakemake_command(bench, run, cores, variant.overrides)
    print("running:", shlex.join(command), flush=True)
    rc, seconds, _ = run_logged(command, run / "local_index_run.log")
    if rc:
        raise SystemExit(f"{variant.name}: workflow failed (exit {rc}), see {run}")
    print(f"{variant.name}: {seconds:.0f} s", flush=True)


def outcome(run: Path, variant: Variant, truth: set[tuple[str, str]]) -> Outcome:
    metrics = json.loads((run / "results" / "eval" / "metrics.json").read_text())
    return Outcome(
        variant,
        metrics["micro_ap"],
        metrics["recall_at_p90"],
        candidate_recall(run, truth),
        cpu_seconds(run, "local_search"),
        cpu_seconds(run, "fit_local_index", "index_local_shard"),
        index_note(run),
    )


def render(outcomes: Sequence[Outcome], bench: Path, truth: int, command: str) -> str:
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    exact = next(o for o in outcomes if o.variant.name.startswith("flat"))
    lines = [
        HEADING,
        "",
        f"- date: {date}; machine: {machine()}",
        f"- benchmark: {bench.name} ({truth} true pairs); default config, `--cores 2`; each row "
        "but the first reruns a copy of the first run with one override (only the local "
        "searches and what follows them rerun)",
        "- candidate recall: true pairs whose reference is among the query's local candidates "
        "(either view); CPU: the jobs' `cpu_time` (benchmark files)",
        "",
        "| local index | cells scanned | micro-AP | Δ vs exact | recall@P90 | candidate recall "
        "| Δ (points) | search CPU s | index CPU s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.variant.name} | {o.cells} | {o.micro_ap:.4f} | "
            f"{o.micro_ap - exact.micro_ap:+.4f} | {o.recall_p90:.4f} | "
            f"{o.candidate_recall:.4f} | {100 * (o.candidate_recall - exact.candidate_recall):+.1f}"
            f" | {o.search_cpu:.1f} | {o.index_cpu:.1f} |"
        )
    lines += ["", "Reproduce:", "", "```bash", command, "```", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, default=WORK / "bench")
    parser.add_argument("--work", type=Path, default=WORK / "local_index_runs")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.md")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--nprobe", type=int, nargs="*", default=[4, 8, 32])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    variants = [Variant("ivf (default)", ())]
    variants += [Variant("flat (exact)", ("local={index: {type: flat}}",))]
    variants += [
        Variant(f"ivf, nprobe {n}", (f"local={{search: {{nprobe: {n}}}}}",)) for n in args.nprobe
    ]
    base = args.work / "default"
    truth = true_pairs(args.bench / "ground_truth.csv")
    outcomes = []
    for i, variant in enumerate(variants):
        run = base if i == 0 else args.work / f"variant{i}"
        run_variant(base, run, variant, args.bench.resolve(), args.cores)
        outcomes.append(outcome(run, variant, truth))
        print(outcomes[-1], flush=True)
    command = ".venv/bin/python benchmarks/local_index.py " + " ".join(
        f"--nprobe {n}" for n in args.nprobe
    )
    replace_section(args.results, HEADING, render(outcomes, args.bench, len(truth), command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
