"""Per-branch metrics of a finished run: every branch alone and the final predictions.

    .venv/bin/python benchmarks/branches.py --run-dir benchmarks/work/bench_run \
        --ground-truth benchmarks/work/bench/ground_truth.csv --tag "default config"

Reads the run's pair tables (``results/verify/*.pairs.csv``): ``local`` ranks all pairs by the
verified-inlier score; ``<model>_similarity`` / ``<model>_normalized`` rank the pairs a global
model proposed by its raw / score-normalized similarity. Writes a section of
``benchmarks/results.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_file import replace_section  # noqa: E402

from copydetect.ablation import ablation  # noqa: E402
from copydetect.metrics import evaluate, read_ground_truth, read_predictions  # noqa: E402
from copydetect.verify import read_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--ground-truth", type=Path, required=True)
    parser.add_argument("--tag", default="")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.md")
    args = parser.parse_args()
    results = args.run_dir / "results"
    truth = read_ground_truth(args.ground_truth)
    tables = [read_table(p) for p in sorted((results / "verify").glob("*.pairs.csv"))]
    rows = dict(ablation(tables, truth))
    rows["predictions.csv (final score)"] = evaluate(
        truth.matches, read_predictions(results / "predictions.csv"), truth.query_ids
    )
    heading = f"## Branches alone{f' — {args.tag}' if args.tag else ''} (benchmarks/branches.py)"
    lines = [
        heading,
        "",
        f"{datetime.date.today()}, {platform.node()}, {os.cpu_count()} cores. Run folder "
        f"`{args.run_dir}`, ground truth `{args.ground_truth}`. Command: `.venv/bin/python "
        f"benchmarks/branches.py --run-dir {args.run_dir} --ground-truth {args.ground_truth}`.",
        "",
        "| ranked by | micro-AP | recall@P90 | recall@1 | recall@10 | pairs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in rows.items():
        lines.append(
            f"| {name} | {m.micro_ap:.4f} | {m.recall_at_p90:.4f} | {m.recall_at_rank1:.4f} "
            f"| {m.recall_at_rank10:.4f} | {m.n_predictions} |"
        )
        print(lines[-1])
    replace_section(args.results, heading, "\n".join([*lines, ""]))


if __name__ == "__main__":
    main()
