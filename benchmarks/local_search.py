"""Local-descriptor search: time and peak memory of the search and merge jobs vs |R|.

Writes synthetic SIFT shards (random uint8 descriptors, 300–600 per image, ``--shard-size``
images per shard) under ``benchmarks/work/local_search/`` and a query shard of noisy copies of
``--queries-per-shard`` references of every reference shard. For each reference-set size it runs
every ``local_search`` job (groups of ``--group`` shards, as ``local.reference_shards_per_job``)
and the ``local_candidates`` merge, each in its own subprocess, so the peak RSS (the child's own
VmHWM) is per job. The claim under test: per-job memory depends on the shard size, not on |R|.

    .venv/bin/python benchmarks/local_search.py --sizes 1000 10000
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "local_search"
HEADING = "## Local descriptor search: memory vs |R| (benchmarks/local_search.py)"

from results_file import replace_section  # noqa: E402

from copydetect.shards import SiftFeatures, read_sift_shard, write_sift_shard  # noqa: E402


@dataclass
class JobRun:
    """One subprocess job: wall seconds and peak RSS in MiB."""

    wall_s: float
    rss_mib: float


# --- synthetic data ----------------------------------------------------------------------------


def make_reference_shard(path: Path, shard: int, shard_size: int) -> None:
    """``shard_size`` images with 300–600 random descriptors each, seeded by the shard index."""
    if path.exists():
        return
    rng = np.random.default_rng(1000 + shard)
    features = []
    for i in range(shard_size):
        n = int(rng.integers(300, 601))
        keypoints = (rng.random((n, 4)) * 300).astype(np.float32)
        descriptors = rng.integers(0, 256, (n, 128), dtype=np.uint8)
        features.append(
            SiftFeatures(f"R{shard * shard_size + i:07d}", keypoints, descriptors, (300, 300))
        )
    write_sift_shard(path, features)


def make_query_shard(path: Path, ref_shards: list[Path], per_shard: int) -> dict[str, str]:
    """Noisy 60 % copies of ``per_shard`` references of every reference shard; returns the
    planted query -> reference pairs."""
    rng = np.random.default_rng(7)
    queries, planted = [], {}
    for shard_path in ref_shards:
        refs = read_sift_shard(shard_path)
        for j in range(per_shard):
            source = refs[17 + 101 * j]
            rows = np.sort(
                rng.choice(len(source.descriptors), int(0.6 * len(source.descriptors)), False)
            )
            noise = rng.integers(-3, 4, (len(rows), 128))
            desc = np.clip(source.descriptors[rows].astype(np.int64) + noise, 0, 255).astype(
                np.uint8
            )
            query_id = f"Q{len(queries):05d}"
            queries.append(SiftFeatures(query_id, source.keypoints[rows], desc, (300, 300)))
            planted[query_id] = source.id
    if not path.exists():
        write_sift_shard(path, queries)
    return planted


# --- jobs (run in subprocesses) ----------------------------------------------------------------


def job_search(queries: str, references: list[str], out: str) -> None:
    from copydetect.local_search import LocalSearchParams, search_group, write_neighbors

    write_neighbors(out, search_group(queries, references, LocalSearchParams(use_gpu="never")))
    report_peak()


def job_merge(queries: str, neighbors: list[str], out: str) -> None:
    from copydetect.local_search import (
        LocalSearchParams,
        QueryLayout,
        count_votes,
        merge_neighbors,
        read_neighbors,
        select_candidates,
    )
    from copydetect.tables import write_csv

    params = LocalSearchParams(use_gpu="never")
    layout = QueryLayout.from_features(read_sift_shard(queries))
    merged = merge_neighbors((read_neighbors(p) for p in neighbors), params.k)
    votes = count_votes(layout, merged, params)
    write_csv(out, select_candidates(votes, candidates_per_query=10, min_votes=2))
    report_peak()


def report_peak() -> None:
    from copydetect.memory import peak_rss_mib

    print(f"PEAK_RSS_MIB {peak_rss_mib():.1f}", flush=True)


def run_job(args: list[str]) -> JobRun:
    """Run this script as one job in a child process, which reports its own peak RSS.

    The child's VmHWM, not ``ru_maxrss`` from wait4: Linux carries the parent's resident size
    at fork over exec into the child's ``ru_maxrss``, and this parent holds shards in memory.
    """
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"job failed: {args}\n{proc.stderr[-3000:]}")
    peak = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS")]
    return JobRun(wall, float(peak[-1]))


# --- driver ------------------------------------------------------------------------------------


def bench_size(n_refs: int, args: argparse.Namespace, queries: Path) -> dict:
    """Every search job and the merge for a reference set of the first ``n_refs`` images."""
    shards = [args.work / "refs" / f"shard{s:04d}.h5" for s in range(n_refs // args.shard_size)]
    groups = [shards[i : i + args.group] for i in range(0, len(shards), args.group)]
    out = args.work / f"R{n_refs}"
    out.mkdir(parents=True, exist_ok=True)
    searches = []
    for g, group in enumerate(groups):
        neighbors = out / f"group{g:03d}.h5"
        searches.append(
            run_job(["--job", "search", str(queries), *map(str, group), "--out", str(neighbors)])
        )
        print(f"  |R|={n_refs} group {g}: {searches[-1]}", flush=True)
    files = [str(out / f"group{g:03d}.h5") for g in range(len(groups))]
    merge = run_job(["--job", "merge", str(queries), *files, "--out", str(out / "cand.csv")])
    sizes = [len(group) for group in groups]
    return {
        "n_refs": n_refs,
        "shards": len(shards),
        "group_sizes": sizes,
        "searches": searches,
        "merge": merge,
    }


def top1_hits(candidates: Path, planted: dict[str, str]) -> int:
    import pandas as pd

    table = pd.read_csv(candidates)
    top = table.groupby("query_id").head(1).set_index("query_id")["reference_id"].to_dict()
    return sum(top.get(q) == r for q, r in planted.items())


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--group", type=int, default=4, help="reference shards per search job")
    parser.add_argument("--queries-per-shard", type=int, default=3)
    parser.add_argument("--job", choices=["search", "merge"])
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--out")
    parser.add_argument("--work", type=Path, default=WORK, help="synthetic shards (cached)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.md")
    args = parser.parse_args()
    if args.job == "search":
        return job_search(args.paths[0], args.paths[1:], args.out)
    if args.job == "merge":
        return job_merge(args.paths[0], args.paths[1:], args.out)

    n_shards = max(args.sizes) // args.shard_size
    shards = [args.work / "refs" / f"shard{s:04d}.h5" for s in range(n_shards)]
    start = time.perf_counter()
    for s, path in enumerate(shards):
        make_reference_shard(path, s, args.shard_size)
    queries = args.work / f"queries_{len(shards)}x{args.queries_per_shard}.h5"
    planted = make_query_shard(queries, shards, args.queries_per_shard)
    print(f"data ready in {time.perf_counter() - start:.0f} s", flush=True)
    results = [bench_size(n, args, queries) for n in args.sizes]
    for r in results:
        in_r = {q: ref for q, ref in planted.items() if int(ref[1:]) < r["n_refs"]}
        hits = top1_hits(args.work / f"R{r['n_refs']}" / "cand.csv", in_r)
        r["hits"] = f"{hits}/{len(in_r)}"
    write_results(results, args, queries)


def write_results(results: list[dict], args: argparse.Namespace, queries: Path) -> None:
    from copydetect.local_search import QueryLayout

    n_desc = QueryLayout.from_features(read_sift_shard(queries)).n_descriptors
    peak = [max(j.rss_mib for j in r["searches"]) for r in results]
    last_rss = [j.rss_mib for j in results[-1]["searches"]]
    group_sizes = results[-1]["group_sizes"]
    rows = [
        f"| {r['n_refs']:,} | {r['shards']} | {len(r['searches'])} | "
        f"{sum(j.wall_s for j in r['searches']):.1f} | {max(j.wall_s for j in r['searches']):.1f} "
        f"| {p:.0f} | {r['merge'].wall_s:.1f} | {r['merge'].rss_mib:.0f} | {r['hits']} |"
        for r, p in zip(results, peak, strict=True)
    ]
    sizes = " ".join(map(str, args.sizes))
    lines = [
        HEADING,
        "",
        f"{datetime.date.today()}, {platform.node()}, {cpu_model()}, {os.cpu_count()} cores, "
        f"faiss CPU flat (exact), k=1. Synthetic SIFT shards of {args.shard_size} images × "
        f"300–600 random uint8 descriptors; {args.group} reference shards per search job; one "
        f"query shard of {n_desc:,} descriptors (60 % noisy copies of references). Each job runs "
        "in its own subprocess; peak RSS is that child's own high-water mark (VmHWM; `ru_maxrss` "
        "would include this driver's RSS, which Linux carries over fork/exec). Command: "
        f"`.venv/bin/python benchmarks/local_search.py --sizes {sizes} --shard-size "
        f"{args.shard_size} --group {args.group} --queries-per-shard {args.queries_per_shard}`.",
        "",
        "| references | ref shards | search jobs | search total (s) | slowest job (s) | "
        "peak RSS per search job (MiB) | merge (s) | merge RSS (MiB) | planted top-1 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Peak search-job RSS at {args.sizes[-1]:,} vs {args.sizes[0]:,} references: "
        f"{peak[-1] / peak[0]:.2f}× (merge: "
        f"{results[-1]['merge'].rss_mib / results[0]['merge'].rss_mib:.2f}×) while |R| grew "
        f"{args.sizes[-1] / args.sizes[0]:.0f}×: memory follows the shard size; time grows "
        "linearly with |R| and is spread over independent jobs. At the largest size the jobs "
        f"({min(group_sizes)}–{max(group_sizes)} shards each) peak at "
        f"{min(last_rss):.0f}–{max(last_rss):.0f} MiB: "
        "the small step over a one-shard job is allocator retention after the first shard, "
        "not growth with the group or |R|.",
        "",
    ]
    replace_section(args.results, HEADING, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
