"""Local recall with the default shared-quantizer IVF at 10k vs 100k references, and a 1M plan.

Real-like data, not random bytes. Everything starts from the real RootSIFT shards of the
500-reference benchmark (``--sift``: references, queries, training; ``--ground-truth``):

- reference SIFT shards of ``--shard-size`` images (ids sorted): the 500 real references (the
  planted true matches, spread over the shards of the smaller set) plus padding images. Each
  padding image is one whole real image of ANOTHER kind (a training image or a distractor query,
  never a reference or a copy of one) whose descriptor set is transformed as a unit: one of the
  8 dihedral transforms of the SIFT grid (``local_recall.dihedral``: the same patches described
  with the orientation turned by quarter turns and/or mirrored), a random 70–100 % subset of
  its keypoints, and Gaussian jitter of ``--jitter`` per byte (renormalised to the row's own
  RootSIFT norm), so the per-image structure (hundreds of descriptors from one picture, repeated
  textures, shared borders) is kept. The smaller set is a prefix of the larger one;
- the query shard is the benchmark's real query shard (true copies and distractors);
- the coarse quantizer is fitted on a training shard of the real training images under the 8
  dihedral transforms (never the references).

Measured, each job the real rule script (``workflow_scripts/*.py`` through
``tests/script_runner.py``) in a child process of its own with the default ``local`` config
(CPU = the child's user + system time from ``getrusage``, imports included; peak RSS = the
child's VmHWM): ``fit_local_index`` once per size, ``index_local_shard`` per reference shard,
``local_search`` per group of ``local.reference_shards_per_job`` shards, ``local_candidates``.

Exact baseline: for a seeded sample of true pairs, a direct faiss ``IndexFlatL2`` 1-NN of their
query descriptors over every reference descriptor, shard by shard (snapshot at the smaller
size), turned into candidates by the workflow's own ``count_votes`` / ``select_candidates``.
Candidate recall = the true reference is among the query's local candidates.

    .venv/bin/python benchmarks/local_scale.py --exact-only   # the exact baseline (cached)
    .venv/bin/python benchmarks/local_scale.py                # 10k vs 100k + results.md
    .venv/bin/python benchmarks/local_scale.py --quick        # smoke run (~2 min)
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
WORK = ROOT / "benchmarks" / "work" / "local_scale"
REAL_SIFT = ROOT / "benchmarks" / "work" / "bench_run" / "results" / "sift"
GROUND_TRUTH = ROOT / "benchmarks" / "work" / "bench" / "ground_truth.csv"
HEADING = "## Local recall at 10k vs 100k references, and a 1M plan (benchmarks/local_scale.py)"
TRANSFORMS = 8  # the dihedral group of the 4×4 SIFT grid
TODAY_FLAT_CPU_HOURS = 51_636  # benchmarks/local_recall.py: flat search at 1M × 600

from local_search import cpu_model  # noqa: E402
from results_file import replace_section  # noqa: E402

from copydetect.shards import SiftFeatures, read_sift_shard, write_sift_shard  # noqa: E402

# --- pure helpers (tests/test_local_scale.py) -------------------------------------------------


def dihedral(desc: np.ndarray, transform: int) -> np.ndarray:
    """SIFT descriptor of the patch turned by ``transform % 4`` quarter turns, mirrored when
    ``transform >= 4`` (OpenCV layout: 4×4 cells × 8 orientation bins; see local_recall.py)."""
    grid = desc.reshape(-1, 4, 4, 8)
    if transform >= 4:
        grid = grid[:, ::-1, :, :][..., (-np.arange(8)) % 8]
    turns = transform % 4
    grid = np.rot90(grid, turns, axes=(1, 2))
    grid = np.roll(grid, 2 * turns, axis=3)
    return np.ascontiguousarray(grid).reshape(-1, 128)


def jitter(desc: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """uint8 descriptors plus Gaussian noise of ``sigma`` per byte, clipped at 0 and rescaled to
    each row's own L2 norm (RootSIFT rows have norm ≈ 255), rounded back to uint8."""
    x = desc.astype(np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    y = np.maximum(x + rng.normal(0.0, sigma, x.shape).astype(np.float32), 0.0)
    y *= norm / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-6)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PaddingSpec:
    """Which real image padding image ``number`` derives from, and how."""

    number: int
    base: int  # index into the base images
    transform: int  # dihedral transform 0..7
    variant: int  # jitter / subset draw among images with the same base and transform


def padding_spec(number: int, n_bases: int) -> PaddingSpec:
    """Bases first, then transforms, then variants: the first ``8 × n_bases`` padding images
    are all distinct pictures before any jittered repeat."""
    return PaddingSpec(
        number, number % n_bases, (number // n_bases) % TRANSFORMS, number // (n_bases * TRANSFORMS)
    )


def padding_image(base: SiftFeatures, spec: PaddingSpec, seed: int, sigma: float) -> SiftFeatures:
    """Padding image ``spec.number``: the base's whole descriptor set, transformed. Depends only
    on (base, spec, seed, sigma), never on which shard it lands in."""
    rng = np.random.default_rng([seed, spec.number])
    keep = rng.random(len(base.descriptors)) < rng.uniform(0.7, 1.0)
    desc = dihedral(base.descriptors[keep], spec.transform)
    return SiftFeatures(
        f"P{spec.number:07d}",
        np.asarray(base.keypoints[keep], np.float32),
        jitter(desc, rng, sigma),
        base.image_size,
    )


@dataclass(frozen=True)
class ShardPlan:
    """The images of one reference shard: real reference indices and padding numbers."""

    name: str
    references: tuple[int, ...]
    padding: tuple[int, ...]


def shard_plans(n_real: int, n_refs: int, shard_size: int, spread: int) -> list[ShardPlan]:
    """Shards of ``n_refs`` images: the ``n_real`` real references dealt round-robin over the
    first ``spread`` shards, padding numbered consecutively in shard order. A prefix of the
    shards is the same whatever ``n_refs``."""
    if n_refs % shard_size or n_real > spread * shard_size or spread > n_refs // shard_size:
        raise ValueError(f"cannot lay out {n_refs} references in shards of {shard_size}")
    plans, next_pad = [], 0
    for s in range(n_refs // shard_size):
        real = tuple(range(s, n_real, spread)) if s < spread else ()
        count = shard_size - len(real)
        plans.append(ShardPlan(f"r{s:04d}", real, tuple(range(next_pad, next_pad + count))))
        next_pad += count
    return plans


def candidate_recall(candidates: pd.DataFrame, truth: dict[str, str]) -> float:
    """Fraction of true pairs (query -> reference) whose reference is among the query's
    candidates."""
    if not truth:
        return math.nan
    found = set(zip(candidates["query_id"], candidates["reference_id"], strict=True))
    return sum((q, r) in found for q, r in truth.items()) / len(truth)


def sample_truth(ground_truth: pd.DataFrame, n: int, seed: int = 0) -> dict[str, str]:
    """A seeded sample of ``n`` true pairs (rows with a reference), by query id."""
    true = ground_truth[ground_truth["reference_id"] != ""]
    picked = true.sample(min(n, len(true)), random_state=seed).sort_values("query_id")
    return dict(zip(picked["query_id"], picked["reference_id"], strict=True))


@dataclass
class Plan:
    """A 1M-reference run of the local branch, from measured per-unit costs."""

    references: int
    ref_per_image: int
    queries: int
    query_per_image: int
    shard_size: int
    query_shard_size: int
    group: int
    fit_cpu_s: float
    index_cpu_s_per_descriptor: float
    search_cpu_s_per_qdesc_shard: float  # marginal cost of one more shard per query descriptor
    search_cpu_s_per_qdesc: float  # cost per query descriptor independent of the shard count
    search_job_overhead_s: float
    candidates_cpu_s_per_qdesc_group: float
    candidates_job_overhead_s: float
    rss_mib: dict[str, float] = field(default_factory=dict)

    @property
    def ref_shards(self) -> int:
        return math.ceil(self.references / self.shard_size)

    @property
    def query_shards(self) -> int:
        return math.ceil(self.queries / self.query_shard_size)

    @property
    def groups(self) -> int:
        return math.ceil(self.ref_shards / self.group)

    def index_job_s(self) -> float:
        return self.index_cpu_s_per_descriptor * self.shard_size * self.ref_per_image

    def search_job_s(self) -> float:
        qdesc = self.query_shard_size * self.query_per_image
        per_shard = self.search_cpu_s_per_qdesc_shard * self.group
        return self.search_job_overhead_s + qdesc * (per_shard + self.search_cpu_s_per_qdesc)

    def candidates_job_s(self) -> float:
        qdesc = self.query_shard_size * self.query_per_image
        return self.candidates_job_overhead_s + qdesc * self.groups * (
            self.candidates_cpu_s_per_qdesc_group
        )

    def cpu_hours(self) -> dict[str, float]:
        return {
            "fit_local_index": self.fit_cpu_s / 3600,
            "index_local_shard": self.ref_shards * self.index_job_s() / 3600,
            "local_search": self.query_shards * self.groups * self.search_job_s() / 3600,
            "local_candidates": self.query_shards * self.candidates_job_s() / 3600,
        }


# --- data ---------------------------------------------------------------------------------------


@dataclass
class RealData:
    """The benchmark's real shards, split into the roles this benchmark gives them."""

    references: list[SiftFeatures]
    bases: list[SiftFeatures]  # training images and distractor queries: padding material
    training: list[SiftFeatures]
    ground_truth: pd.DataFrame


def load_real(args: argparse.Namespace) -> RealData:
    gt = pd.read_csv(args.ground_truth, dtype=str, keep_default_na=False)
    distractors = set(gt.loc[gt["reference_id"] == "", "query_id"])
    training = read_sift_shard(args.sift / "training" / "s0000.h5")
    queries = read_sift_shard(args.sift / "queries" / "s0000.h5")
    bases = [
        f for f in training + [q for q in queries if q.id in distractors] if len(f.descriptors)
    ]
    references = sorted(read_sift_shard(args.sift / "references" / "s0000.h5"), key=lambda f: f.id)
    return RealData(references, bases, training, gt)


def write_reference_shards(real: RealData, args: argparse.Namespace) -> list[Path]:
    """The largest set's reference SIFT shards (cached: a shard already written is kept)."""
    spread = min(args.sizes) // args.shard_size
    plans = shard_plans(len(real.references), max(args.sizes), args.shard_size, spread)
    folder = args.work / "sift" / "references"
    folder.mkdir(parents=True, exist_ok=True)
    paths, start = [], time.perf_counter()
    for i, plan in enumerate(plans):
        path = folder / f"{plan.name}.h5"
        paths.append(path)
        if path.exists():
            continue
        images = [real.references[r] for r in plan.references]
        for number in plan.padding:
            spec = padding_spec(number, len(real.bases))
            images.append(padding_image(real.bases[spec.base], spec, args.seed, args.jitter))
        write_sift_shard(path, sorted(images, key=lambda f: f.id))
        if i % 5 == 4 or i == len(plans) - 1:
            print(f"  reference shards {i + 1}/{len(plans)}: {time.perf_counter() - start:.0f} s")
    return paths


def write_training_shard(real: RealData, args: argparse.Namespace) -> Path:
    """The real training images under the 8 dihedral transforms (quantizer training data)."""
    path = args.work / "sift" / "training" / "t0000.h5"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        images = [
            SiftFeatures(f"{f.id}_{t}", f.keypoints, dihedral(f.descriptors, t), f.image_size)
            for f in real.training
            for t in range(TRANSFORMS)
        ]
        write_sift_shard(path, sorted(images, key=lambda f: f.id))
    return path


def descriptor_counts(paths: list[Path]) -> list[int]:
    from copydetect.shards import sift_descriptor_count

    return [sift_descriptor_count(p) for p in paths]


# --- exact baseline -----------------------------------------------------------------------------


def exact_candidates(
    query_path: Path, truth: dict[str, str], shards: list[Path], checkpoints: list[int], args
) -> dict:
    """Exact 1-NN of the sampled queries' descriptors over the shards (faiss ``IndexFlatL2``,
    one shard at a time, first-seen wins ties), turned into candidates after each checkpoint
    (a number of shards) by the workflow's own vote and candidate rules."""
    import faiss

    from copydetect.local_search import (
        CandidateParams,
        Neighbors,
        QueryLayout,
        VoteParams,
        count_votes,
        select_candidates,
    )

    faiss.omp_set_num_threads(args.exact_threads)
    queries = [f for f in read_sift_shard(query_path) if f.id in truth and len(f.descriptors)]
    layout = QueryLayout.from_features(queries)
    qdesc = np.concatenate([f.descriptors for f in queries]).astype(np.float32)
    best_d = np.full(len(qdesc), np.inf, dtype=np.float32)
    best_ref = np.full(len(qdesc), -1, dtype=np.int64)  # into ref_ids
    best_kp = np.full(len(qdesc), -1, dtype=np.int64)
    ref_ids: list[str] = []
    ref_shards: list[str] = []
    local = args.config["local"]
    votes_params = VoteParams.from_mapping(local["votes"])
    options = CandidateParams.from_mapping(local["candidates"])
    out, cpu0, wall0 = {}, time.process_time(), time.perf_counter()
    for s, path in enumerate(shards):
        feats = read_sift_shard(path)
        counts = np.array([len(f.descriptors) for f in feats], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        first = len(ref_ids)
        ref_ids += [f.id for f in feats]
        ref_shards += [path.stem] * len(feats)
        rdesc = np.concatenate([f.descriptors for f in feats])
        del feats
        for lo in range(0, len(rdesc), args.exact_chunk):
            index = faiss.IndexFlatL2(128)
            index.add(np.ascontiguousarray(rdesc[lo : lo + args.exact_chunk], dtype=np.float32))
            dist, idx = index.search(qdesc, 1)
            better = dist[:, 0] < best_d
            rows = idx[better, 0] + lo
            image = np.searchsorted(offsets, rows, side="right") - 1
            best_d[better] = dist[better, 0]
            best_ref[better] = first + image
            best_kp[better] = rows - offsets[image]
        done = s + 1
        print(
            f"  exact: shard {done}/{len(shards)}, {time.process_time() - cpu0:.0f} CPU-s, "
            f"{time.perf_counter() - wall0:.0f} s",
            flush=True,
        )
        if done in checkpoints:
            seen = np.unique(best_ref[best_ref >= 0])
            compact = np.where(best_ref >= 0, np.searchsorted(seen, best_ref), -1)
            # ref_ids are not globally sorted across shards: sort the seen ones, keep the map.
            order = np.argsort([ref_ids[i] for i in seen], kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            neighbors = Neighbors(
                [ref_ids[seen[i]] for i in order],
                [ref_shards[seen[i]] for i in order],
                best_d[:, None].copy(),
                np.where(compact >= 0, rank[compact], -1)[:, None].astype(np.int32),
                best_kp[:, None].astype(np.int32),
            )
            votes = count_votes(layout, neighbors, votes_params)
            cands = select_candidates(votes, options.candidates_per_query, options.min_votes)
            out[done] = {
                "shards": done,
                "cpu_s": time.process_time() - cpu0,
                "recall": candidate_recall(cands, truth),
                "candidates": cands[["query_id", "reference_id", "votes"]].to_dict("list"),
            }
            print(f"  exact at {done} shards: candidate recall {out[done]['recall']:.3f}")
    return out


def exact_baseline(real: RealData, shards: list[Path], args: argparse.Namespace) -> dict:
    """The exact baseline, cached in ``exact.json`` keyed by what it depends on."""
    truth = sample_truth(real.ground_truth, args.exact_queries)
    checkpoints = [n // args.shard_size for n in args.sizes]
    key = {
        "truth": truth,
        "shards": [p.name for p in shards[: max(checkpoints)]],
        "jitter": args.jitter,
        "seed": args.seed,
        "shard_size": args.shard_size,
        "local": args.config["local"]["votes"] | args.config["local"]["candidates"],
    }
    cache = args.work / "exact.json"
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved["key"] == key:
            return {int(k): v for k, v in saved["at"].items()}
    at = exact_candidates(
        args.sift / "queries" / "s0000.h5", truth, shards[: max(checkpoints)], checkpoints, args
    )
    cache.write_text(json.dumps({"key": key, "at": at}))
    return at


# --- rule jobs ----------------------------------------------------------------------------------


@dataclass
class JobRun:
    """One rule job run in a child process: CPU (user + system) and wall seconds, peak RSS."""

    name: str
    n_refs: int
    cpu_s: float
    wall_s: float
    rss_mib: float
    shards: int = 0  # reference shards the job read
    query_descriptors: int = 0


def run_job(name: str, n_refs: int, script: str, args: argparse.Namespace, **spec) -> JobRun:
    """Run ``workflow_scripts/<script>`` in a child (``--job``), as Snakemake would: CPU from
    ``getrusage(RUSAGE_CHILDREN)`` around it, peak RSS from the child's VmHWM."""
    tag = f"{name}_{n_refs}"
    spec_path = args.work / "jobs" / f"{tag}.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec.update(script=script, log=str(args.work / "jobs" / f"{tag}.log"))
    spec.setdefault("threads", args.threads)
    spec_path.write_text(json.dumps(spec, indent=1))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--job", str(spec_path)], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        log = Path(spec["log"]).read_text() if Path(spec["log"]).exists() else ""
        sys.exit(f"{tag} failed:\n{proc.stderr[-3000:]}\n{log[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS")]
    run = JobRun(name, n_refs, cpu, wall, float(peak[-1]))
    print(f"  {tag}: {cpu:.1f} CPU-s, {wall:.1f} s, peak RSS {run.rss_mib:.0f} MiB", flush=True)
    return run


def pow2(n: int) -> int:
    """``n`` rounded to the nearest power of two (what planning passes as reference_images)."""
    return 1 << max(0, round(math.log2(max(n, 1))))


def index_params(args: argparse.Namespace, n_refs: int) -> dict:
    """The default ``local.index`` mapping, with the benchmark's overrides (``--nlist``,
    ``--iterations``, ``--max-training``) when given."""
    params = dict(args.config["local"]["index"])
    if args.nlist.get(n_refs):
        params["nlist"] = args.nlist[n_refs]
    if args.iterations:
        params["iterations"] = args.iterations
    if args.max_training:
        params["max_training_descriptors"] = args.max_training
    return params


@dataclass
class SizeRuns:
    """Every job of one reference-set size."""

    n_refs: int
    fit: JobRun
    index: list[JobRun]
    search: list[JobRun]
    candidates: JobRun
    extra_search: list[JobRun]  # for the cost model only (not part of a workflow run)
    nlist: int = 0
    candidates_path: Path | None = None

    def query_side_cpu(self) -> float:
        return sum(r.cpu_s for r in self.search) + self.candidates.cpu_s


def measure_size(
    n_refs: int, shards: list[Path], training: Path, queries: Path, args: argparse.Namespace
) -> SizeRuns:
    """fit, index every shard, search every group, merge into candidates: one size."""
    folder = args.work / f"ivf_{n_refs}"
    folder.mkdir(parents=True, exist_ok=True)
    shards = shards[: n_refs // args.shard_size]
    params = index_params(args, n_refs)
    coarse = folder / "coarse.faiss"
    print(f"|R| = {n_refs:,}: fit_local_index ({params})", flush=True)
    fit = run_job(
        "fit_local_index",
        n_refs,
        "fit_local_index.py",
        args,
        input={"features": [str(training)]},
        output={"index": str(coarse)},
        params={"index": params, "reference_images": pow2(n_refs)},
    )
    index_files, index_runs = [], []
    for path in shards:
        out = folder / "index" / path.name
        index_files.append(out)
        index_runs.append(
            run_job(
                f"index_local_shard_{path.stem}",
                n_refs,
                "index_local_shard.py",
                args,
                input={"features": str(path), "index": str(coarse)},
                output={"index": str(out)},
                params={"index": params},
            )
        )
    group = args.config["local"]["reference_shards_per_job"]
    qdesc = sum(descriptor_counts([queries]))
    search, neighbor_files = [], []
    for g in range(0, len(index_files), group):
        files = index_files[g : g + group]
        run = search_job(f"local_search_g{g // group:03d}", n_refs, queries, files, params, args)
        run.shards, run.query_descriptors = len(files), qdesc
        search.append(run)
        neighbor_files.append(folder / "out" / f"{run.name}.h5")
    out = folder / "out" / "candidates"
    candidates = run_job(
        "local_candidates",
        n_refs,
        "local_candidates.py",
        args,
        input={"queries": str(queries), "neighbors": [str(p) for p in neighbor_files]},
        output={"votes": f"{out}.votes.csv", "candidates": f"{out}.csv"},
        params={
            "search": args.config["local"]["search"],
            "votes": args.config["local"]["votes"],
            "candidates": args.config["local"]["candidates"],
        },
    )
    candidates.shards, candidates.query_descriptors = len(neighbor_files), qdesc
    extra = []
    if n_refs == max(args.sizes):  # the cost model's extra points: tiny queries, 1 shard
        tiny = args.work / "q_tiny.h5"
        write_sift_shard(tiny, read_sift_shard(queries)[:4])
        tq = sum(descriptor_counts([tiny]))
        for files in (index_files[:1], index_files[:group]):
            run = search_job(f"local_search_tiny_{len(files)}", n_refs, tiny, files, params, args)
            run.shards, run.query_descriptors = len(files), tq
            extra.append(run)
        run = search_job("local_search_one", n_refs, queries, index_files[:1], params, args)
        run.shards, run.query_descriptors = 1, qdesc
        extra.append(run)
    return SizeRuns(
        n_refs, fit, index_runs, search, candidates, extra, read_nlist(coarse), Path(f"{out}.csv")
    )


def search_job(
    name: str, n_refs: int, queries: Path, files: list[Path], params: dict, args
) -> JobRun:
    out = args.work / f"ivf_{n_refs}" / "out" / f"{name}.h5"
    return run_job(
        name,
        n_refs,
        "local_search_block.py",
        args,
        input={"queries": str(queries), "references": [str(p) for p in files]},
        output={"neighbors": str(out)},
        params={
            "search": args.config["local"]["search"],
            "index": params,
            "gpu_lock_dir": str(args.work / "locks"),
        },
    )


def read_nlist(coarse: Path) -> int:
    import faiss

    return int(faiss.extract_index_ivf(faiss.read_index(str(coarse))).nlist)


def search_cost_model(runs: list[JobRun]) -> dict[str, float]:
    """Least squares ``cpu = o + L·shards + a·q + b·q·shards`` over search jobs (q = query
    descriptors): o the job's fixed cost, L per shard read, a per query descriptor (coarse
    assignment, merge), b per query descriptor per shard (list scans)."""
    x = np.array([[1, r.shards, r.query_descriptors, r.query_descriptors * r.shards] for r in runs])
    y = np.array([r.cpu_s for r in runs])
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    return dict(zip(["overhead", "per_shard", "per_qdesc", "per_qdesc_shard"], coef, strict=True))


# --- 1M plan ------------------------------------------------------------------------------------


def plan_1m(large: SizeRuns, shard_descriptors: int, args: argparse.Namespace) -> Plan:
    """The 1M × 50k plan from the largest size's measured jobs (see the report for the model)."""
    model = search_cost_model([*large.search, *large.extra_search])
    cand = [large.candidates, args.small_candidates]
    # local_candidates: cpu = o + c · (query descriptors × neighbour files), two points.
    x = np.array([[1, r.query_descriptors * r.shards] for r in cand], dtype=float)
    o, c = np.linalg.solve(x, [r.cpu_s for r in cand]) if x[0, 1] != x[1, 1] else (0, 0)
    index_cpu = sum(r.cpu_s for r in large.index)
    return Plan(
        references=1_000_000,
        ref_per_image=600,
        queries=50_000,
        query_per_image=600,
        shard_size=args.shard_size,
        query_shard_size=args.config["sharding"]["queries"]["shard_size"],
        group=args.config["local"]["reference_shards_per_job"],
        fit_cpu_s=large.fit.cpu_s * args.nlist_1m / large.nlist,
        index_cpu_s_per_descriptor=index_cpu / shard_descriptors,
        search_cpu_s_per_qdesc_shard=max(model["per_qdesc_shard"], 0.0),
        search_cpu_s_per_qdesc=max(model["per_qdesc"], 0.0)
        * math.log2(args.nlist_1m)
        / math.log2(large.nlist),
        search_job_overhead_s=max(model["overhead"], 0.0)
        + max(model["per_shard"], 0.0) * args.config["local"]["reference_shards_per_job"],
        candidates_cpu_s_per_qdesc_group=max(c, 0.0),
        candidates_job_overhead_s=max(o, 0.0),
    )


def search_rss_at(large: SizeRuns, qcount: int, args: argparse.Namespace) -> float:
    """Peak RSS of a 1M ``local_search`` job: the largest measured one plus the query side's
    growth to a full query shard of 600-descriptor images, at the MiB per query descriptor
    measured between the one-shard jobs with the full and the 4-query shard."""
    tiny, one = large.extra_search[0], large.extra_search[2]
    per_qdesc = (one.rss_mib - tiny.rss_mib) / max(
        one.query_descriptors - tiny.query_descriptors, 1
    )
    target = args.config["sharding"]["queries"]["shard_size"] * 600
    return max(r.rss_mib for r in large.search) + per_qdesc * max(target - qcount, 0)


# --- report -------------------------------------------------------------------------------------


def job_row(label: str, runs: list[JobRun]) -> str:
    cpu = [r.cpu_s for r in runs]
    span = f"{min(cpu):.1f}–{max(cpu):.1f}" if len(runs) > 1 else f"{cpu[0]:.1f}"
    return (
        f"| {label} | {len(runs)} | {span} | {sum(cpu):.1f} | "
        f"{max(r.wall_s for r in runs):.1f} | {max(r.rss_mib for r in runs):.0f} |"
    )


def report(sizes: list[SizeRuns], exact: dict, recall: dict, plan: Plan, args, info) -> str:
    small, large = sizes
    n_queries = info["queries"]
    per_query = {s.n_refs: s.query_side_cpu() / n_queries for s in sizes}
    ratio = per_query[large.n_refs] / per_query[small.n_refs]
    rss = {s.n_refs: max(r.rss_mib for r in [*s.search, s.candidates]) for s in sizes}
    search_rss = {s.n_refs: max(r.rss_mib for r in s.search) for s in sizes}
    index_rss = {s.n_refs: max(r.rss_mib for r in s.index) for s in sizes}
    model = search_cost_model([*large.search, *large.extra_search])
    hours = plan.cpu_hours()
    total_h = sum(hours.values())
    cmd = "`.venv/bin/python benchmarks/local_scale.py" + (" --quick`" if args.quick else "`")
    overrides = ", ".join(f"{k}: {v}" for k, v in info["overrides"].items()) or "none"
    lines = [
        HEADING,
        "",
        f"{datetime.date.today()}, {platform.node()}, {cpu_model()}, {os.cpu_count()} cores "
        f"(shared with other work), faiss CPU, jobs with {args.threads} threads. Total run "
        f"{info['total_s'] / 60:.0f} min. Command: {cmd} (real SIFT of the 500-reference "
        "benchmark via `--sift`, `--ground-truth`).",
        "",
        f"Data (see the script's docstring): reference shards of {args.shard_size:,} images, "
        f"{large.n_refs // args.shard_size} shards at {large.n_refs:,} references, the "
        f"{small.n_refs:,} set being its first {small.n_refs // args.shard_size}; the 500 real "
        f"references (mean {info['real_per_image']:.0f} descriptors) are spread over those, "
        f"the rest is padding: {info['n_bases']} real base images (training images and "
        "distractor queries) × 8 dihedral transforms × jitter variants (70–100 % of the "
        f"keypoints, Gaussian noise σ = {args.jitter:g} per byte on RootSIFT rows of norm 255, "
        f"where unrelated nearest neighbours lie ≈ 98 apart); {info['ref_descriptors']:,} "
        f"reference descriptors at {large.n_refs:,} (mean {info['ref_per_image']:.0f} per "
        f"image). Queries: the benchmark's real query shard, {n_queries} queries (300 true "
        f"copies, 200 distractors), {info['query_descriptors']:,} descriptors; one view (the "
        "mirrored view doubles the query side). Coarse quantizer fitted on the real training "
        f"images × 8 dihedral transforms ({info['training_descriptors']:,} descriptors, "
        f"never the references). Config: default `local` (index {info['index']}); "
        f"benchmark overrides: {overrides}.",
        "",
        "| |R| | nlist | job | jobs | CPU-s per job | CPU-s total | max wall s | "
        "max peak RSS MiB |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for s in sizes:
        for label, runs in (
            ("`fit_local_index`", [s.fit]),
            ("`index_local_shard`", s.index),
            ("`local_search`", s.search),
            ("`local_candidates`", [s.candidates]),
        ):
            lines.append(f"| {s.n_refs:,} | {s.nlist:,} " + job_row(label, runs))
    lines += [
        "",
        "Query side (`local_search` + `local_candidates`, every job's CPU including its "
        "interpreter start and imports):",
        "",
        "| |R| | CPU-s per query | peak RSS of a search job MiB | candidate recall, ivf "
        f"({recall['n_sample']} sampled true pairs) | exact flat (same pairs) | ivf, all "
        f"{recall['n_all']} true pairs |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sizes:
        lines.append(
            f"| {s.n_refs:,} | {per_query[s.n_refs]:.3f} | {search_rss[s.n_refs]:.0f} | "
            f"{recall['ivf_sample'][s.n_refs]:.3f} | {recall['exact'][s.n_refs]:.3f} | "
            f"{recall['ivf_all'][s.n_refs]:.3f} |"
        )
    verdict = lambda ok: "**met**" if ok else "**not met**"  # noqa: E731
    rss_ratio = rss[large.n_refs] / rss[small.n_refs]
    lines += [
        "",
        f"- CPU per query at {large.n_refs:,} vs {small.n_refs:,} references: **{ratio:.2f}×** "
        f"for 10× references (target ≤ 3: {verdict(ratio <= 3)}).",
        f"- Peak RSS per query-side job: **{rss_ratio:.2f}×** (max over `local_search` and "
        f"`local_candidates`: {rss[small.n_refs]:.0f} → {rss[large.n_refs]:.0f} MiB; target ≤ "
        f"1.2: {verdict(rss_ratio <= 1.2)}); `index_local_shard` {index_rss[small.n_refs]:.0f} "
        f"→ {index_rss[large.n_refs]:.0f} MiB; `fit_local_index` {small.fit.rss_mib:.0f} → "
        f"{large.fit.rss_mib:.0f} MiB (one job per run).",
        f"- Candidate recall (true reference among the local candidates: ≥ "
        f"{args.config['local']['candidates']['min_votes']} votes and rank ≤ "
        f"{args.config['local']['candidates']['candidates_per_query']}), ivf − exact on the "
        f"same {recall['n_sample']} pairs: "
        + ", ".join(
            f"{(recall['ivf_sample'][n] - recall['exact'][n]) * 100:+.1f} points at {n:,}"
            for n in (small.n_refs, large.n_refs)
        )
        + f" (exact flat: {exact[large.n_refs // args.shard_size]['cpu_s']:.0f} CPU-s for "
        f"those {recall['n_sample']} queries at {large.n_refs:,}, one thread).",
        "",
        f"Search cost model, least squares over the {len(large.search) + len(large.extra_search)} "
        f"`local_search` jobs at {large.n_refs:,} (full groups, the last short group, and "
        "one-shard / 4-query jobs): CPU = o + L·shards + a·q + b·q·shards with q the query "
        f"descriptors: o = {model['overhead']:.1f} s per job, L = {model['per_shard']:.2f} s "
        f"per shard read, a = {model['per_qdesc'] * 1e6:.1f} µs per query descriptor (coarse "
        f"assignment, merge), b = {model['per_qdesc_shard'] * 1e6:.2f} µs per query "
        "descriptor per shard (list scans).",
        "",
        f"### 1M-reference plan (default `local` config; {plan.references:,} references × "
        f"{plan.ref_per_image} descriptors, {plan.queries:,} queries × {plan.query_per_image}, "
        "as in the 51,636 CPU-hour flat estimate)",
        "",
        f"- Jobs: 1 `fit_local_index` (nlist {args.nlist_1m:,}, auto), {plan.ref_shards} "
        f"`index_local_shard` (one per reference shard of {plan.shard_size:,}), "
        f"{plan.query_shards} query shards × {plan.groups} groups = "
        f"{plan.query_shards * plan.groups:,} `local_search` jobs per query view, "
        f"{plan.query_shards} `local_candidates`.",
        f"- Per job: `index_local_shard` {plan.index_job_s():.0f} CPU-s "
        f"({plan.index_cpu_s_per_descriptor * 1e6:.2f} µs per descriptor measured, imports "
        f"included), peak ≈ {index_rss[large.n_refs]:.0f} MiB measured at "
        f"{info['shard_descriptors'] // (large.n_refs // args.shard_size):,} descriptors per "
        f"shard; `local_search` {plan.search_job_s() / 60:.1f} CPU-min "
        f"({plan.query_shard_size:,} queries × {plan.query_per_image} descriptors × "
        f"{plan.group} shards; ≈ {plan.search_job_s() / 60 / args.threads:.1f} min wall on "
        f"{args.threads} threads), peak ≈ {info['search_rss_1m']:.0f} MiB; `local_candidates` "
        f"{plan.candidates_job_s():.0f} CPU-s.",
        "- CPU-hours: "
        + ", ".join(f"`{k}` {v:,.1f}" for k, v in hours.items())
        + f": **{total_h:,.0f} CPU-hours per query view** against today's "
        f"{TODAY_FLAT_CPU_HOURS:,} (flat), **{TODAY_FLAT_CPU_HOURS / total_h:,.0f}× less**.",
        "- Model: the index build per descriptor and the search's per-shard term b are the "
        f"measured {large.n_refs:,} figures; with `nlist: auto` the lists keep ≈ "
        f"{args.config['local']['index']['list_length']:,} descriptors per cell over the whole "
        "collection, so a shard's share of each probed list shrinks as shards are added and b "
        f"measured at {large.n_refs // args.shard_size} shards is an upper bound at 500. The "
        "per-query-descriptor term a (coarse assignment in the HNSW quantizer) is scaled by "
        f"log2 nlist ({large.nlist:,} → {args.nlist_1m:,}); the fit by nlist (k-means on the "
        "same capped training set).",
        "",
    ]
    return "\n".join(lines)


def measure_and_report(real, shards, training, exact, args, start) -> None:
    queries = args.sift / "queries" / "s0000.h5"
    sizes = [measure_size(n, shards, training, queries, args) for n in args.sizes]
    small, large = sizes
    args.small_candidates = small.candidates
    truth = sample_truth(real.ground_truth, args.exact_queries)
    all_truth = sample_truth(real.ground_truth, len(real.ground_truth))
    recall = {"n_sample": len(truth), "n_all": len(all_truth), "ivf_sample": {}, "ivf_all": {}}
    recall["exact"] = {n: exact[n // args.shard_size]["recall"] for n in args.sizes}
    for s in sizes:
        cands = pd.read_csv(s.candidates_path, dtype={"query_id": str, "reference_id": str})
        recall["ivf_sample"][s.n_refs] = candidate_recall(cands, truth)
        recall["ivf_all"][s.n_refs] = candidate_recall(cands, all_truth)
    counts = descriptor_counts(shards[: large.n_refs // args.shard_size])
    qcount = sum(descriptor_counts([queries]))
    from copydetect.local_index import auto_nlist

    args.nlist_1m = int(auto_nlist_for(auto_nlist, 1_000_000, args))
    info = {
        "queries": len(read_sift_shard(queries)),
        "query_descriptors": qcount,
        "ref_descriptors": sum(counts),
        "ref_per_image": sum(counts) / large.n_refs,
        "real_per_image": np.mean([len(f.descriptors) for f in real.references]),
        "n_bases": len(real.bases),
        "training_descriptors": sum(descriptor_counts([training])),
        "shard_descriptors": sum(counts),
        "index": index_params(args, large.n_refs),
        "overrides": args.overrides,
        "total_s": time.perf_counter() - start,
    }
    info["search_rss_1m"] = search_rss_at(large, qcount, args)
    plan = plan_1m(large, sum(counts), args)
    figures = {
        "sizes": [asdict(s) | {"candidates_path": str(s.candidates_path)} for s in sizes],
        "recall": recall,
        "plan": asdict(plan) | {"cpu_hours": plan.cpu_hours()},
        "info": {k: (v if not isinstance(v, np.generic) else v.item()) for k, v in info.items()},
    }
    (args.work / "figures.json").write_text(json.dumps(figures, indent=1, default=str))
    text = report(sizes, exact, recall, plan, args, info)
    print(text)
    if not args.quick:
        replace_section(args.results, HEADING, text)


# --- driver -------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run; no results.md")
    parser.add_argument("--exact-only", action="store_true", help="data + exact baseline only")
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 100_000])
    parser.add_argument("--shard-size", type=int, default=2000, help="references per shard")
    parser.add_argument("--exact-queries", type=int, default=24, help="true pairs, exact")
    parser.add_argument("--exact-chunk", type=int, default=262_144, help="reference rows/step")
    parser.add_argument("--exact-threads", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="threads of the rule jobs")
    parser.add_argument(
        "--nlist",
        nargs="*",
        default=[],
        help="SIZE=NLIST overrides of nlist: auto (e.g. when "
        "k-means on 2 cores would take too long)",
    )
    parser.add_argument("--iterations", type=int, default=0, help="k-means iterations override")
    parser.add_argument("--max-training", type=int, default=0, help="training descriptors cap")
    parser.add_argument("--jitter", type=float, default=4.0, help="padding noise per byte")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sift", type=Path, default=REAL_SIFT, help="the benchmark's SIFT")
    parser.add_argument("--ground-truth", type=Path, default=GROUND_TRUTH)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.md")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.shard_size, args.exact_queries = [1000, 4000], 500, 8
        args.work = args.work / "quick"
    args.config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    args.nlist = {int(k): int(v) for k, v in (item.split("=") for item in args.nlist)}
    args.overrides = {f"nlist at {k:,}": v for k, v in args.nlist.items()}
    if args.iterations:
        args.overrides["iterations"] = args.iterations
    if args.max_training:
        args.overrides["max_training_descriptors"] = args.max_training
    return args


def main() -> None:
    args = parse_args()
    if args.job:
        import scale

        return scale.run_rule_job(args.job)
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    real = load_real(args)
    shards = write_reference_shards(real, args)
    training = write_training_shard(real, args)
    print(f"data ready in {time.perf_counter() - start:.0f} s", flush=True)
    exact = exact_baseline(real, shards, args)
    if args.exact_only:
        return
    measure_and_report(real, shards, training, exact, args, start)


if __name__ == "__main__":
    main()
