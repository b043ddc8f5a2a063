"""Which query views verification matches: both (the query and its mirror) against the view the
local search voted for (``verify.flip_vote_ratio``), side by side on finished runs.

For each (benchmark, run folder) pair, the run's own candidate tables (``results/search/…``) and
SIFT shards are verified again in this process, once per ``flip_vote_ratio`` value, one process
and one BLAS thread each (CPU = this process's CPU time around ``verify_candidates``), and the
evidence is compared with the ground truth:

- pairs verified, and how many of them in one view only;
- true pairs with at least 6 effective inliers (the evidence fusion trusts), and those the
  setting lost against matching both views;
- wrong pairs with at least 6 inliers.

    .venv/bin/python benchmarks/verify_views.py \\
        --pair benchmarks/work/bench RUN1 --pair benchmarks/work/bench2 RUN2 [--ratios none 2 1]

The section is written into ``benchmarks/results.md`` (``--results``).
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from accuracy import machine
from results_file import replace_section

from copydetect.candidates import merge_candidates
from copydetect.tables import read_table
from copydetect.verify import VerifyParams, verify_candidates, views_to_match

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Matching the view the votes name (benchmarks/verify_views.py)"
STRONG = 6  # effective inliers: the evidence fusion trusts


@dataclass(frozen=True)
class Row:
    """One verification setting on one run."""

    bench: str
    ratio: float | None
    pairs: int
    one_view: int
    cpu_s: float
    true_strong: int
    true_lost: int  # true pairs strong with both views, weaker with this setting
    wrong_strong: int


def candidates(run: Path) -> pd.DataFrame:
    """The candidates verify read in this run (full queries' view; its branches as in
    ``rules/common.smk``: the local searches and every global model)."""
    search = run / "results" / "search"
    tables = {"local": search / "local/queries/s0000.candidates.csv"}
    mirrored = search / "local/queries_mirrored/s0000.candidates.csv"
    if mirrored.exists():
        tables["local_mirrored"] = mirrored
    for model in sorted(p.name for p in (search / "global").iterdir()):
        tables[model] = search / "global" / model / "queries/s0000.candidates.csv"
    return merge_candidates({name: read_table(path) for name, path in tables.items()})


def verify(run: Path, table: pd.DataFrame, params: VerifyParams) -> tuple[pd.DataFrame, float]:
    sift = run / "results" / "sift"
    start = time.process_time()
    pairs = verify_candidates(  # one process: one BLAS thread, as in the workers
        table,
        sift / "queries/s0000.h5",
        sift / "queries_mirrored/s0000.h5",
        {p.stem: p for p in (sift / "references").glob("*.h5")},
        params,
        processes=1,
    )
    return pairs, time.process_time() - start


def measure(bench: Path, run: Path, ratios: list[float | None]) -> list[Row]:
    table = candidates(run)
    truth = pd.read_csv(bench / "ground_truth.csv", dtype=str)
    true_keys = set(zip(truth["query_id"], truth["reference_id"], strict=True))
    rows, reference = [], None
    for ratio in ratios:
        params = replace(VerifyParams(), flip_vote_ratio=ratio)
        pairs, cpu = verify(run, table, params)
        is_true = pd.Series(
            [k in true_keys for k in zip(pairs["query_id"], pairs["reference_id"], strict=True)]
        )
        strong = pairs["inliers"].fillna(0).to_numpy() >= STRONG
        if reference is None:  # the first setting is the one the others are compared with
            reference = strong & is_true.to_numpy()
        verified = pairs["matches"].notna()
        matched = views_to_match(pairs[verified], params)
        rows.append(
            Row(
                bench.name,
                ratio,
                int(verified.sum()),
                sum(m != "both" for m in matched),
                cpu,
                int((strong & is_true).sum()),
                int((reference & ~strong).sum()),
                int((strong & ~is_true).sum()),
            )
        )
    return rows


def section(rows: list[Row], command: str) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        HEADING,
        "",
        f"- date: {now}; machine: {machine()}; commit {commit}",
        "- each run's own candidates and SIFT shards verified again in one process, one BLAS "
        "thread, once per setting (CPU: process time around `verify_candidates`); "
        f"strong = at least {STRONG} effective inliers; lost = true pairs strong when both views "
        "are matched and not strong with the setting",
        "",
        "| benchmark | flip_vote_ratio | pairs verified | in one view | verify CPU s | "
        "true strong | true lost | wrong strong |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "null (both views)" if r.ratio is None else f"{r.ratio:g}"
        lines.append(
            f"| {r.bench} | {ratio} | {r.pairs:,} | {r.one_view:,} | {r.cpu_s:.1f} | "
            f"{r.true_strong} | {r.true_lost} | {r.wrong_strong} |"
        )
    lines += ["", "Reproduce:", "", "```bash", command, "```", ""]
    return "\n".join(lines)


def parse_ratio(text: str) -> float | None:
    return None if text.lower() in ("none", "null") else float(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", nargs=2, action="append", metavar=("BENCH", "RUN"), required=True)
    parser.add_argument("--ratios", nargs="+", type=parse_ratio, default=[None, 2.0])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.md")
    args = parser.parse_args()
    rows = [row for b, r in args.pair for row in measure(Path(b), Path(r), args.ratios)]
    pairs = " ".join(f"--pair {b} {r}" for b, r in args.pair)
    ratios = " ".join("none" if x is None else f"{x:g}" for x in args.ratios)
    command = f".venv/bin/python benchmarks/verify_views.py {pairs} --ratios {ratios}"
    replace_section(args.results, HEADING, section(rows, command))
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
