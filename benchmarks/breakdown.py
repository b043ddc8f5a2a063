"""Per-edit and per-source accuracy of workflow runs on synthesized benchmarks.

Reads what ``benchmarks/accuracy.py`` leaves in a run folder (``results/predictions.csv``,
``results/eval/metrics.json``) and the benchmark's ``edits.csv``, ``ground_truth.csv``,
``sources.csv`` and ``build.json``, and writes, for each (benchmark, run) pair, into one section
of ``benchmarks/results.md``:

- the run's micro-AP, recall at precision 0.9 and its threshold, recall@1;
- per edit operation and per kind of source of the true reference: the copies, the share whose
  first answer is their reference (top-1), a micro-AP over those copies and *all* distractors
  (the distractors' predictions stay in, so a subset cannot look better by dropping them), and
  the share of the copies found at or above the run's own P90 threshold;
- per kind of source of the distractors: how many get a prediction at or above that threshold.

    .venv/bin/python benchmarks/breakdown.py \\
        --pair benchmarks/work/bench2 benchmarks/work/bench2_run \\
        [--pair benchmarks/work/bench benchmarks/work/bench_run] [--results benchmarks/results.md]
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from accuracy import ablation_lines  # noqa: E402
from results_file import replace_section  # noqa: E402

from copydetect.metrics import GroundTruthMatch, PredictedMatch, evaluate

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Harder benchmark (bench2): per edit and per source (benchmarks/breakdown.py)"
# Kinds of the first benchmark's sources, whose build.json predates the "kinds" record.
LEGACY_KINDS = {
    "plasma": "wallpaper",
    "gnome": "wallpaper",
    "mate": "wallpaper",
    "ukui": "wallpaper",
    "tuxpaint": "photo stamp",
}


@dataclass(frozen=True)
class Row:
    """Figures of one group of copy queries (an edit, a source kind)."""

    group: str
    copies: int
    top1: float
    micro_ap: float
    found_at_p90: float  # share of the copies scored at or above the run's P90 threshold


@dataclass(frozen=True)
class RunData:
    """One run on one benchmark, read back."""

    bench: Path
    run_dir: Path
    metrics: dict
    predictions: list[PredictedMatch]
    truth: dict[str, str]  # query -> reference ("" for a distractor)
    chains: dict[str, list[dict]]  # query -> edit chain
    kind_of_query: dict[str, str]  # query -> kind of its source (reference for a copy)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def source_kinds(bench: Path) -> dict[str, str]:
    """File-name prefix (``plasma`` in ``plasma__x.png``) -> kind of source."""
    build_file = bench / "build.json"
    build = json.loads(build_file.read_text()) if build_file.exists() else {}
    return {**LEGACY_KINDS, **build.get("kinds", {})}


def query_kinds(bench: Path, truth: dict[str, str]) -> dict[str, str]:
    """Query -> kind of the source it was made from (its reference's for a copy)."""
    kinds = source_kinds(bench)
    by_id = {}
    for row in read_csv(bench / "sources.csv"):
        prefix = Path(row["source"]).name.split("__")[0]
        by_id[row["id"]] = kinds.get(prefix, prefix)
    return {q: by_id.get(ref or q, "?") for q, ref in truth.items()}


def load_run(bench: Path, run_dir: Path) -> RunData:
    truth = {r["query_id"]: r["reference_id"] for r in read_csv(bench / "ground_truth.csv")}
    predictions = [
        PredictedMatch(r["query_id"], r["reference_id"], float(r["score"]))
        for r in read_csv(run_dir / "results" / "predictions.csv")
    ]
    chains = {r["query_id"]: json.loads(r["edits"]) for r in read_csv(bench / "edits.csv")}
    metrics = json.loads((run_dir / "results" / "eval" / "metrics.json").read_text())
    return RunData(bench, run_dir, metrics, predictions, truth, chains, query_kinds(bench, truth))


def top1(predictions: Sequence[PredictedMatch]) -> dict[str, str]:
    """Query -> best-scored reference (ties: the smaller reference id)."""
    best: dict[str, tuple[float, str]] = {}
    for p in predictions:
        key = (-p.score, p.db)
        if p.query not in best or key < best[p.query]:
            best[p.query] = key
    return {q: ref for q, (_, ref) in best.items()}


def group_row(run: RunData, group: str, copies: Sequence[str], best: dict[str, str]) -> Row:
    """Figures of ``copies`` (query ids) against every distractor of the run."""
    distractors = {q for q, ref in run.truth.items() if not ref}
    keep = set(copies) | distractors
    gt = [GroundTruthMatch(q, run.truth[q]) for q in copies]
    metrics = evaluate(gt, [p for p in run.predictions if p.query in keep])
    threshold = run.metrics.get("threshold_at_p90")
    score = {(p.query, p.db): p.score for p in run.predictions}
    found = sum(
        threshold is not None and score.get((q, run.truth[q]), -1e9) >= threshold for q in copies
    )
    hits = sum(best.get(q) == run.truth[q] for q in copies)
    n = len(copies)
    return Row(group, n, hits / n if n else 0.0, metrics.micro_ap, found / n if n else 0.0)


def grouped(run: RunData, key: str) -> dict[str, list[str]]:
    """Copy queries by edit operation (``key="edit"``: a query in each of its ops) or by the
    kind of their reference's source (``key="source"``)."""
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for q, ref in sorted(run.truth.items()):
        if not ref:
            continue
        if key == "edit":
            for op in sorted({step["op"] for step in run.chains.get(q, [])}):
                groups[op].append(q)
        else:
            groups[run.kind_of_query[q]].append(q)
    return dict(sorted(groups.items()))


def breakdown(run: RunData, key: str) -> list[Row]:
    """One row per group, weakest top-1 first, then the row of all copies."""
    best = top1(run.predictions)
    rows = [group_row(run, g, qs, best) for g, qs in grouped(run, key).items()]
    rows.sort(key=lambda r: (r.top1, r.micro_ap, r.group))
    copies = [q for q, ref in sorted(run.truth.items()) if ref]
    return [*rows, group_row(run, "all copies", copies, best)]


def distractor_rows(run: RunData) -> list[tuple[str, int, int]]:
    """(kind, distractors, flagged at or above the P90 threshold), by kind of their source."""
    threshold = run.metrics.get("threshold_at_p90")
    flagged = {
        p.query
        for p in run.predictions
        if not run.truth.get(p.query, "x") and threshold is not None and p.score >= threshold
    }
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for q, ref in run.truth.items():
        if not ref:
            counts[run.kind_of_query[q]][0] += 1
            counts[run.kind_of_query[q]][1] += q in flagged
    return [(kind, n, f) for kind, (n, f) in sorted(counts.items())]


# --- The section ---


def table(title: str, rows: Sequence[Row]) -> list[str]:
    lines = [
        "",
        f"| {title} | copies | top-1 right | micro-AP (+ all distractors) "
        "| found ≥ P90 threshold |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = f"**{r.group}**" if r.group == "all copies" else r.group
        lines.append(
            f"| {name} | {r.copies} | {r.top1:.2f} | {r.micro_ap:.3f} | {r.found_at_p90:.2f} |"
        )
    return lines


def reference_kinds(run: RunData) -> str:
    """How many references each kind of source gave, most first."""
    kinds = source_kinds(run.bench)
    counts = collections.Counter(
        kinds.get(Path(row["source"]).name.split("__")[0], "?")
        for row in read_csv(run.bench / "sources.csv")
        if row["role"] == "reference"
    )
    return ", ".join(f"{kind} {n}" for kind, n in counts.most_common())


def weakest(rows: Sequence[Row], n: int = 5) -> str:
    """The ``n`` groups with the lowest top-1 share (``rows`` come weakest first)."""
    groups = [r for r in rows if r.group != "all copies"][:n]
    return ", ".join(f"{r.group} {r.top1:.2f} ({r.copies})" for r in groups)


def run_lines(run: RunData) -> list[str]:
    """The figures of one run: headline metrics, per-edit, per-source and distractor tables."""
    m = run.metrics
    threshold = m.get("threshold_at_p90")
    record_file = run.run_dir / "accuracy_run.json"
    record = json.loads(record_file.read_text()) if record_file.exists() else {}
    build_file = run.bench / "build.json"
    build = json.loads(build_file.read_text()) if build_file.exists() else {}
    n_copies = sum(bool(ref) for ref in run.truth.values())
    edits, sources = breakdown(run, "edit"), breakdown(run, "source")
    lines = [
        f"### {run.bench.name} (edit set `{build.get('edit_set', 'default')}`)",
        "",
        f"- {n_copies} copies, {len(run.truth) - n_copies} distractors; run of "
        f"{record.get('date', '?')}, {record.get('seconds', 0):.0f} s wall, config overrides: "
        + (", ".join(f"`{o}`" for o in record.get("overrides", [])) or "none"),
        f"- benchmark built by: `{build.get('command', '?')}`",
        f"- references by source kind: {reference_kinds(run)}",
        "",
        "| micro-AP | recall@P90 | threshold@P90 | recall@1 | recall@10 |",
        "|---:|---:|---:|---:|---:|",
        f"| **{m['micro_ap']:.4f}** | **{m['recall_at_p90']:.4f}** | "
        + (f"{threshold:.4f}" if threshold is not None else "n/a")
        + f" | {m['recall_at_rank1']:.4f} | {m['recall_at_rank10']:.4f} |",
        *ablation_lines(run.run_dir),
        "",
        f"Weakest edits (top-1): {weakest(edits)}; weakest sources: {weakest(sources)}.",
        *table("edit (copies whose chain has it)", edits),
        *table("source kind of the reference", sources),
        "",
        "| distractor source kind | distractors | with a prediction ≥ P90 threshold |",
        "|---|---:|---:|",
        *(f"| {kind} | {n} | {f} |" for kind, n, f in distractor_rows(run)),
        "",
    ]
    return lines


def relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (as a command would name it)."""
    resolved = path.absolute()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or "?"


def render(runs: Sequence[RunData], argv: Sequence[str]) -> str:
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        HEADING,
        "",
        f"- date: {date}; commit {git_commit()}; rows sorted weakest top-1 first",
        "- top-1 right: the copy's best-scored reference is its own; micro-AP: the ISC2021",
        "  micro-AP of the group's copies pooled with all distractors' predictions; found ≥ P90",
        "  threshold: the copy's true pair scores at least the run's threshold at precision 0.9",
        "- bench2 (`make benchmark-data`): the first benchmark's wallpaper tiles and photographic",
        "  stamps plus clip art (Tux Paint stamps that are not photographic), icons (Oxygen,",
        "  Tango), line drawings (Tux Paint starters), plots (octave-doc) and typeset text pages",
        "  in seven scripts; copies and distractors drawn from the `disc21` edit set (25 kinds,",
        "  1–3 per chain). Sources that share content (a wallpaper's tiles; icons, clip art and",
        "  stamps of one folder whose names begin with the same word) are dealt to one role.",
        "  Caveat: Oxygen also shares parts across folders (the globe of applications-internet",
        "  in network-workgroup), so a few top false positives are unlabeled partial copies",
        "",
    ]
    for run in runs:
        lines += run_lines(run)
    lines += [
        "Reproduce:",
        "",
        "```bash",
        "make benchmark-data   # bench2; the first bench: benchmarks/make_benchmark_data.py",
        *(
            f".venv/bin/python benchmarks/accuracy.py --bench {relative(run.bench)} "
            f"--run-dir {relative(run.run_dir)} --results /tmp/scratch.md"
            for run in runs
        ),
        " ".join([".venv/bin/python", "benchmarks/breakdown.py", *argv]),
        "```",
    ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pair",
        nargs=2,
        action="append",
        type=Path,
        required=True,
        metavar=("BENCH", "RUN_DIR"),
        help="a benchmark and the run folder of benchmarks/accuracy.py on it (repeatable)",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.md")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs = [load_run(bench, run_dir) for bench, run_dir in args.pair]
    section = render(runs, list(sys.argv[1:] if argv is None else argv))
    replace_section(args.results, HEADING, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
