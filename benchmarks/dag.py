"""DAG build + dry-run time and memory for large image lists (issue: planning at 1M images).

Makes N empty files named like DISC21 images (the workflow lists and plans; Snakemake stats the
inputs of the jobs it plans, so the files must exist, but nothing decodes them), writes list
files, and times ``snakemake -n --quiet`` in a subprocess (peak RSS from ``ru_maxrss``).

    .venv/bin/python benchmarks/dag.py --references 10000 100000 1000000 --queries 50000
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from results_file import replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "dag"


def make_files(prefix: str, count: int, width: int) -> Path:
    """Create ``count`` empty files in sub-folders of 1000 and a list file naming them."""
    folder = WORK / f"{prefix}{count}"
    list_file = WORK / f"{prefix}{count}.txt"
    if list_file.exists():
        return list_file
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        sub = folder / f"{i // 1000:05d}"
        if i % 1000 == 0:
            sub.mkdir(exist_ok=True)
        path = sub / f"{prefix}{i:0{width}d}.jpg"
        path.touch()
        names.append(str(path))
    tmp = list_file.with_suffix(".tmp")
    tmp.write_text("\n".join(names) + "\n")
    os.replace(tmp, list_file)
    return list_file


def dry_run(
    references: Path, queries: Path, workdir: Path, change_detection: str
) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) and job count of one ``snakemake -n`` planning run."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(ROOT / ".venv" / "bin" / "snakemake"),
        "-n",
        "--quiet",
        "rules",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        "--config",
        f"references={references}",
        f"queries={queries}",
    ]
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        sys.exit(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    jobs = sum(
        int(line.split()[-1]) for line in proc.stdout.splitlines() if line.startswith("total")
    )
    return wall, max(peak, before) / 1024, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--references", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=50_000)
    parser.add_argument(
        "--change-detection", choices=["stat", "path"], nargs="+", default=["stat", "path"]
    )
    args = parser.parse_args()
    queries = make_files("Q", args.queries, 5)
    rows = []
    for n in args.references:
        refs = make_files("R", n, 7)
        for mode in args.change_detection:
            wall, rss, jobs = dry_run(refs, queries, WORK / f"run{n}", mode)
            rows.append((n, mode, wall, rss, jobs))
            print(f"{n} references, {args.queries} queries, {mode}: {wall:.1f} s, {rss:.0f} MiB")
    write_results(rows, args.queries)


def write_results(rows: list[tuple[int, str, float, float, int]], n_queries: int) -> None:
    lines = [
        "## DAG build + dry run at scale (benchmarks/dag.py)",
        "",
        f"{datetime.date.today()}, {platform.node()}, {os.cpu_count()} cores. "
        f"List inputs (one path per line), {n_queries} queries, default config "
        "(shard_size 1000 for queries and 2000 for references, 16 reference shards per search "
        "job); `change_detection: stat` reads each image's size and mtime while planning, "
        "`path` only lists names. Command: "
        "`.venv/bin/python benchmarks/dag.py`. Target: < 60 s at 1M references.",
        "",
        "| references | change_detection | dry-run wall (s) | peak RSS (MiB) | jobs planned |",
        "|---:|---|---:|---:|---:|",
        *(f"| {n:,} | {m} | {wall:.1f} | {rss:.0f} | {jobs:,} |" for n, m, wall, rss, jobs in rows),
        "",
    ]
    replace_section(ROOT / "benchmarks" / "results.md", lines[0], "\n".join(lines))


if __name__ == "__main__":
    main()
