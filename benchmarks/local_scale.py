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
  dihedral transforms, clean and ``--training-copies`` times jittered (never the references).

Measured, each job the real rule script (``workflow_scripts/*.py`` through
``tests/script_runner.py``) in a child process of its own with the default ``local`` config
(CPU = the child's own user + system time, imports included; peak RSS = the child's VmHWM):
``fit_local_index``, ``index_local_shard`` per reference shard, ``assign_local_cells`` of the
query shard, ``local_search`` per group of ``local.reference_shards_per_job`` shards,
``local_candidates``. ``--index-only`` stops after the shard indexes (index first, search
later). Sizes whose coarse quantizer is the same (same ``local.index`` and nlist) share the
fit and the shard indexes. A job measured before with the same spec is reused (``--fresh``
reruns). ``--large-shards N`` runs only the
first N shards of the large set (2 cores cannot index 100k references in an afternoon shared
with other work): its query side is then the least-squares search cost model of its measured
jobs over all its groups (see ``search_cost_model``), and its recall is not measured.

Exact baseline: for a seeded sample of true pairs, a direct faiss ``IndexFlatL2`` 1-NN of their
query descriptors over every reference descriptor, shard by shard (``--exact-queries`` pairs at
the small size, the first ``--exact-queries-large`` of them carried on to the large one), turned
into candidates by the workflow's own ``count_votes`` / ``select_candidates``. Candidate recall
= the true reference is among the query's local candidates.

    .venv/bin/python benchmarks/local_scale.py --exact-only   # the exact baseline (cached)
    .venv/bin/python benchmarks/local_scale.py --workers 2    # 10k vs 100k + results.md
    .venv/bin/python benchmarks/local_scale.py --quick --large-shards 4   # smoke run (~5 min)
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
from functools import partial
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
    """A 1M-reference run of the local branch: per-job CPU from measured unit costs."""

    references: int
    ref_per_image: int
    queries: int
    query_per_image: int
    shard_size: int
    query_shard_size: int
    group: int
    nlist: int
    runs_per_job: int
    fit_cpu_s: float
    index_job_s: float
    assign_job_s: float
    search_job_s: float
    candidates_job_s: float
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

    def cpu_hours(self) -> dict[str, float]:
        return {
            "fit_local_index": self.fit_cpu_s / 3600,
            "index_local_shard": self.ref_shards * self.index_job_s / 3600,
            "assign_local_cells": self.query_shards * self.assign_job_s / 3600,
            "local_search": self.query_shards * self.groups * self.search_job_s / 3600,
            "local_candidates": self.query_shards * self.candidates_job_s / 3600,
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
    """The real training images under the 8 dihedral transforms, clean and
    ``--training-copies`` times jittered (quantizer training data: never the references; two
    copies give the ≥ 39 × 32,768 descriptors that let ``nlist: auto`` follow 100k references).
    The file is per copy count: a different count is another training set."""
    path = args.work / "sift" / "training" / f"t0000_copies{args.training_copies}.h5"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([args.seed, 1])
        images = [
            SiftFeatures(
                f"{f.id}_{t}_{j}",
                f.keypoints,
                jitter(dihedral(f.descriptors, t), rng, args.jitter)
                if j
                else dihedral(f.descriptors, t),
                f.image_size,
            )
            for f in real.training
            for t in range(TRANSFORMS)
            for j in range(1 + args.training_copies)  # the clean transform, jittered copies
        ]
        write_sift_shard(path, sorted(images, key=lambda f: f.id))
    return path


def descriptor_counts(paths: list[Path]) -> list[int]:
    from copydetect.shards import sift_descriptor_count

    return [sift_descriptor_count(p) for p in paths]


# --- exact baseline -----------------------------------------------------------------------------


@dataclass
class ExactState:
    """Running exact 1-NN of sampled queries' descriptors (rows in query shard order)."""

    query_ids: list[str]
    offsets: np.ndarray  # int64 [n queries + 1]
    desc: np.ndarray  # uint8 [n, 128]
    dist: np.ndarray  # float32 [n]: squared L2 to the nearest reference descriptor so far
    ref_id: np.ndarray  # object [n]: its image ('' = none yet)
    shard: np.ndarray  # object [n]: its shard name
    keypoint: np.ndarray  # int64 [n]: its row within the image
    cpu_s: float = 0.0

    @classmethod
    def start(cls, query_path: Path, truth: dict[str, str]) -> ExactState:
        queries = [f for f in read_sift_shard(query_path) if f.id in truth and len(f.descriptors)]
        counts = np.array([len(f.descriptors) for f in queries], dtype=np.int64)
        n = int(counts.sum())
        return cls(
            [f.id for f in queries],
            np.concatenate([[0], np.cumsum(counts)]),
            np.concatenate([f.descriptors for f in queries]),
            np.full(n, np.inf, dtype=np.float32),
            np.full(n, "", dtype=object),
            np.full(n, "", dtype=object),
            np.full(n, -1, dtype=np.int64),
        )

    def subset(self, query_ids: set[str]) -> ExactState:
        """The state of only some of the queries (the rows of those queries)."""
        keep = [i for i, q in enumerate(self.query_ids) if q in query_ids]
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in keep])
        counts = np.diff(self.offsets)[keep]
        return ExactState(
            [self.query_ids[i] for i in keep],
            np.concatenate([[0], np.cumsum(counts)]),
            self.desc[rows],
            self.dist[rows],
            self.ref_id[rows],
            self.shard[rows],
            self.keypoint[rows],
            self.cpu_s,
        )

    def scan(self, shards: list[Path], chunk: int, threads: int) -> None:
        """Fold the shards' descriptors into the running 1-NN (faiss ``IndexFlatL2``, exact
        integer distances; a tie keeps the earlier shard and row)."""
        import faiss

        faiss.omp_set_num_threads(threads)
        query = self.desc.astype(np.float32)
        for path in shards:
            cpu0 = time.process_time()
            feats = read_sift_shard(path)
            counts = np.array([len(f.descriptors) for f in feats], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(counts)])
            ids = np.array([f.id for f in feats], dtype=object)
            rdesc = np.concatenate([f.descriptors for f in feats])
            del feats
            for lo in range(0, len(rdesc), chunk):
                index = faiss.IndexFlatL2(128)
                index.add(np.ascontiguousarray(rdesc[lo : lo + chunk], dtype=np.float32))
                dist, idx = index.search(query, 1)
                better = dist[:, 0] < self.dist
                rows = idx[better, 0] + lo
                image = np.searchsorted(offsets, rows, side="right") - 1
                self.dist[better] = dist[better, 0]
                self.ref_id[better] = ids[image]
                self.shard[better] = path.stem
                self.keypoint[better] = rows - offsets[image]
            self.cpu_s += time.process_time() - cpu0
            print(f"  exact: {path.name}, {self.cpu_s:.0f} CPU-s so far", flush=True)

    def candidates(self, config: dict) -> pd.DataFrame:
        """Local candidates by the workflow's own ``count_votes`` and ``select_candidates``."""
        from copydetect.local_search import (
            CandidateParams,
            Neighbors,
            QueryLayout,
            VoteParams,
            count_votes,
            select_candidates,
        )

        seen = self.ref_id != ""
        ref_ids, index = np.unique(self.ref_id[seen].astype(str), return_inverse=True)
        ref_index = np.full(len(self.dist), -1, dtype=np.int32)
        ref_index[seen] = index
        shard_of = dict(zip(self.ref_id[seen], self.shard[seen], strict=True))
        neighbors = Neighbors(
            list(ref_ids),
            [shard_of[r] for r in ref_ids],
            self.dist[:, None].copy(),
            ref_index[:, None],
            np.where(seen, self.keypoint, -1)[:, None].astype(np.int32),
        )
        layout = QueryLayout(self.query_ids, self.offsets)
        local = config["local"]
        votes = count_votes(layout, neighbors, VoteParams.from_mapping(local["votes"]))
        options = CandidateParams.from_mapping(local["candidates"])
        return select_candidates(votes, options.candidates_per_query, options.min_votes)


@dataclass
class ExactResult:
    """Exact candidate recall of a sample of true pairs at one size."""

    n_refs: int
    truth: dict[str, str]
    recall: float
    cpu_s: float  # exact scan CPU of this sample up to this size


def exact_baseline(real: RealData, shards: list[Path], args: argparse.Namespace) -> list:
    """Exact candidate recall: ``--exact-queries`` sampled true pairs at the small size, the
    first ``--exact-queries-large`` of them carried on to the large size (cached per stage)."""
    small_n, large_n = args.sizes
    truth = sample_truth(real.ground_truth, args.exact_queries)
    truth_l = sample_truth(real.ground_truth, args.exact_queries_large)
    truth_l = {q: r for q, r in truth_l.items() if truth.get(q) == r}  # a sub-sample
    key = {
        "shards": [p.name for p in shards[: large_n // args.shard_size]],
        "jitter": args.jitter,
        "seed": args.seed,
        "local": args.config["local"]["votes"] | args.config["local"]["candidates"],
    }
    cache = args.work / "exact.json"
    saved = json.loads(cache.read_text()) if cache.exists() else {}
    stages = [(small_n, truth), (small_n, truth_l), (large_n, truth_l)]
    if args.large_shards or not args.exact_queries_large:  # no large stage
        stages = stages[:1]
    results: list[ExactResult] = []
    state = None
    for n, sample in stages:
        tag = f"{n}:{len(sample)}"
        hit = saved.get(tag)
        if hit and hit["key"] == key and hit["truth"] == sample:
            results.append(ExactResult(n, sample, hit["recall"], hit["cpu_s"]))
            state = None  # a later uncached stage restarts its scan from the first shard
            continue
        if state is None or set(state.query_ids) - set(sample):
            if state is not None:
                state = state.subset(set(sample))
            else:
                state = ExactState.start(query_shard(args), sample)
                state.scan(
                    shards[: small_n // args.shard_size], args.exact_chunk, args.exact_threads
                )
        if n > small_n:
            state.scan(
                shards[small_n // args.shard_size : n // args.shard_size],
                args.exact_chunk,
                args.exact_threads,
            )
        recall = candidate_recall(state.candidates(args.config), sample)
        print(f"  exact at {n:,}, {len(sample)} pairs: candidate recall {recall:.3f}", flush=True)
        results.append(ExactResult(n, sample, recall, state.cpu_s))
        saved[tag] = {"key": key, "truth": sample, "recall": recall, "cpu_s": state.cpu_s}
        cache.write_text(json.dumps(saved))
    return results


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
    runs: int = 0  # merged runs the job searched (local_search)
    scanned: float = 0.0  # reference descriptors in the probed cells per query descriptor


def input_stamps(inputs: dict) -> dict[str, list[int]]:
    """(size, modification time in ns) of every input file of a job spec."""
    paths = [p for v in inputs.values() for p in (v if isinstance(v, list) else [v])]
    return {str(p): [Path(p).stat().st_size, Path(p).stat().st_mtime_ns] for p in paths}


def run_job(
    name: str, n_refs: int, script: str, args: argparse.Namespace, tag: str = "", **spec
) -> JobRun:
    """Run ``workflow_scripts/<script>`` in a child (``--job``), as Snakemake would: CPU (user +
    system, imports included) and peak RSS (VmHWM) reported by the child. A job measured
    before with the same spec, the same input files (size and modification time: a refitted
    coarse quantizer reruns every index and search built on it) and its outputs still there
    is not rerun unless ``--fresh``."""
    tag = tag or f"{name}_{n_refs}"
    spec_path = args.work / "jobs" / f"{tag}.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec.update(script=script, log=str(args.work / "jobs" / f"{tag}.log"))
    spec["input_stamps"] = input_stamps(spec.get("input", {}))
    spec.setdefault("threads", args.threads)
    done = spec_path.with_suffix(".done.json")
    if not args.fresh and done.exists():  # measured before with the same spec: reuse
        saved = json.loads(done.read_text())
        if saved["spec"] == spec and all(Path(p).exists() for p in outputs(spec)):
            print(f"  {tag}: measured before ({saved['run']['cpu_s']:.1f} CPU-s)", flush=True)
            return JobRun(**saved["run"])
    spec_path.write_text(json.dumps(spec, indent=1))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--job", str(spec_path)], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        log = Path(spec["log"]).read_text() if Path(spec["log"]).exists() else ""
        raise RuntimeError(f"{tag} failed:\n{proc.stderr[-3000:]}\n{log[-3000:]}")
    # Reported by the child itself (getrusage(RUSAGE_SELF) after the script): jobs may run
    # side by side (--workers), so the parent's RUSAGE_CHILDREN would mix them.
    said = {
        key: float(value)
        for key, value in (
            line.split() for line in proc.stdout.splitlines() if line.count(" ") == 1
        )
        if key in ("CPU_S", "PEAK_RSS_MIB")
    }
    run = JobRun(name, n_refs, said["CPU_S"], wall, said["PEAK_RSS_MIB"])
    print(
        f"  {tag}: {run.cpu_s:.1f} CPU-s, {wall:.1f} s, peak RSS {run.rss_mib:.0f} MiB", flush=True
    )
    done.write_text(json.dumps({"spec": spec, "run": asdict(run)}))
    return run


def outputs(spec: dict) -> list[str]:
    """The output paths of a job spec."""
    return [p for v in spec["output"].values() for p in ([v] if isinstance(v, str) else v)]


def pow2(n: int) -> int:
    """``n`` rounded to the nearest power of two (what planning passes as reference_images)."""
    return 1 << max(0, round(math.log2(max(n, 1))))


@dataclass(frozen=True)
class Variant:
    """One measured setting: a label, a reference-set size and overrides of ``local.index``."""

    label: str
    n_refs: int
    overrides: tuple[tuple[str, int], ...] = ()

    def index_params(self, config: dict) -> dict:
        return dict(config["local"]["index"]) | dict(self.overrides)


@dataclass
class SizeRuns:
    """Every job of one variant."""

    variant: Variant
    fit: JobRun
    index: list[JobRun]
    search: list[JobRun]
    candidates: JobRun
    extra_search: list[JobRun]  # for the cost model only (not part of a workflow run)
    assign: JobRun | None = None  # assign_local_cells of the query shard
    assign_tiny: JobRun | None = None  # the same for the 4-query shard (its fixed cost)
    nlist: int = 0
    candidates_path: Path | None = None
    total_shards: int = 0  # of the set; more than len(index) when only a prefix was run

    @property
    def n_refs(self) -> int:
        return self.variant.n_refs

    @property
    def complete(self) -> bool:
        return len(self.index) == self.total_shards

    def group_sizes(self, group: int) -> list[int]:
        return [min(group, self.total_shards - g) for g in range(0, self.total_shards, group)]

    def query_side_cpu(self, group: int) -> float:
        """Measured, or when only a prefix of the shards was run, the search cost model over
        the set's groups plus the measured ``local_candidates``."""
        assign = self.assign.cpu_s if self.assign else 0.0
        if self.complete:
            return assign + sum(r.cpu_s for r in self.search) + self.candidates.cpu_s
        m = search_cost_model([*self.search, *self.extra_search])
        j = self.search[0]  # a full group: its runs and scan scale with the group's shards
        return (
            assign
            + self.candidates.cpu_s
            + sum(
                search_job_cpu(
                    m, s, j.query_descriptors, j.runs * s / j.shards, j.scanned * s / j.shards
                )
                for s in self.group_sizes(group)
            )
        )


def variant_nlist(variant: Variant, training: Path, args: argparse.Namespace) -> int:
    """The nlist ``fit_local_index`` will choose (its own ``choose_nlist``), known beforehand so
    that sizes with the same coarse quantizer share its fit and shard indexes."""
    from copydetect.local_index import LocalIndexParams, choose_nlist
    from copydetect.shards import read_shard_ids

    params = LocalIndexParams.from_mapping(variant.index_params(args.config))
    images, total = len(read_shard_ids(training)), sum(descriptor_counts([training]))
    return choose_nlist(params, pow2(variant.n_refs), images, total)


def measure_size(
    variant: Variant, shards: list[Path], training: Path, queries: Path, args: argparse.Namespace
) -> SizeRuns | None:
    """fit, index every shard, search every group, merge into candidates: one variant. The fit
    and shard indexes are shared by sizes whose coarse quantizer is the same (same index
    parameters and nlist: deterministic, so identical files)."""
    n_refs, label = variant.n_refs, variant.label
    nlist = variant_nlist(variant, training, args)
    folder = args.work / f"ivf_{label}_nlist{nlist}"
    folder.mkdir(parents=True, exist_ok=True)
    total_shards = n_refs // args.shard_size
    partial_run = args.large_shards and n_refs == max(args.sizes)
    shards = shards[: min(total_shards, args.large_shards) if partial_run else total_shards]
    params = variant.index_params(args.config)
    coarse = folder / "coarse.faiss"
    # The smallest size with this coarse quantizer fits it (the same file for the others).
    fit_images = min(
        pow2(n)
        for n in args.sizes
        if variant_nlist(Variant(label, n, variant.overrides), training, args) == nlist
    )
    print(f"{label}, |R| = {n_refs:,}, nlist {nlist}: fit_local_index ({params})", flush=True)
    fit = run_job(
        "fit_local_index",
        n_refs,
        "fit_local_index.py",
        args,
        tag=f"{label}_nlist{nlist}.fit_local_index",
        input={"features": [str(training)]},
        output={"index": str(coarse)},
        params={"index": params, "reference_images": fit_images},
    )
    index_files = [folder / "index" / path.name for path in shards]
    index_runs = parallel(
        [
            partial(
                run_job,
                "index_local_shard",
                n_refs,
                "index_local_shard.py",
                args,
                tag=f"{label}_nlist{nlist}.index_local_shard_{path.stem}",
                input={"features": str(path), "coarse": str(coarse)},
                output={"index": str(out)},
                params={},
            )
            for path, out in zip(shards, index_files, strict=True)
        ],
        args.workers,
    )
    if args.index_only:
        return None
    group = args.config["local"]["reference_shards_per_job"]
    qdesc = sum(descriptor_counts([queries]))
    assign, cells = assign_job(f"{label}_nlist{nlist}", n_refs, queries, coarse, args)
    assign.query_descriptors = qdesc
    names = [
        f"{label}_{n_refs}.local_search_g{g // group:03d}"
        for g in range(0, len(index_files), group)
    ]
    search = parallel(
        [
            partial(
                search_job,
                name,
                n_refs,
                queries,
                index_files[i * group : (i + 1) * group],
                cells,
                args,
            )
            for i, name in enumerate(names)
        ],
        args.workers,
    )
    sizes = descriptor_counts(shards)  # an index file holds its SIFT shard's descriptors
    nprobe = min(args.config["local"]["search"]["nprobe"], read_nlist(coarse))
    layout = partial(job_layout, sizes=sizes, nprobe=nprobe, nlist=read_nlist(coarse))
    for i, run in enumerate(search):
        run.shards, run.runs, run.scanned = layout(
            range(i * group, min((i + 1) * group, len(sizes)))
        )
        run.query_descriptors = qdesc
    neighbor_files = [folder / "out" / f"{name}.h5" for name in names]
    if len(index_files) < total_shards:
        # A prefix of the set was run: merge the measured groups' neighbour files repeated up
        # to the set's group count, so the merge job reads as many files as the full run.
        groups = math.ceil(total_shards / group)
        neighbor_files = [neighbor_files[i % len(neighbor_files)] for i in range(groups)]
    out = folder / "out" / f"candidates_{n_refs}"
    candidates = run_job(
        "local_candidates",
        n_refs,
        "local_candidates.py",
        args,
        tag=f"{label}_{n_refs}.local_candidates",
        input={"queries": str(queries), "neighbors": [str(p) for p in neighbor_files]},
        output={"votes": f"{out}.votes.csv", "candidates": f"{out}.csv"},
        params={
            "search": args.config["local"]["search"],
            "votes": args.config["local"]["votes"],
            "candidates": args.config["local"]["candidates"],
        },
    )
    candidates.shards, candidates.query_descriptors = len(neighbor_files), qdesc
    extra, assign_tiny = [], None
    if n_refs == max(args.sizes):  # the cost model's extra points: 4 queries, 1 shard
        tiny = args.work / "q_tiny.h5"
        if not tiny.exists():
            write_sift_shard(tiny, read_sift_shard(queries)[:4])
        tq = sum(descriptor_counts([tiny]))
        assign_tiny, tiny_cells = assign_job(f"{label}_nlist{nlist}", n_refs, tiny, coarse, args)
        assign_tiny.query_descriptors = tq
        for files in (index_files[:1], index_files[:group]):
            name = f"{label}_{n_refs}.local_search_tiny_{len(files)}"
            run = search_job(name, n_refs, tiny, files, tiny_cells, args)
            run.shards, run.runs, run.scanned = layout(range(len(files)))
            run.query_descriptors = tq
            extra.append(run)
        name = f"{label}_{n_refs}.local_search_one"
        run = search_job(name, n_refs, queries, index_files[:1], cells, args)
        run.shards, run.runs, run.scanned = layout(range(1))
        run.query_descriptors = qdesc
        extra.append(run)
    return SizeRuns(
        variant,
        fit,
        index_runs,
        search,
        candidates,
        extra,
        assign,
        assign_tiny,
        read_nlist(coarse),
        Path(f"{out}.csv"),
        total_shards,
    )


def parallel(jobs: list, workers: int) -> list:
    """Run zero-argument callables (each starting one child job) ``workers`` at a time, results
    in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(lambda job: job(), jobs))


def assign_job(tag: str, n_refs: int, queries: Path, coarse: Path, args) -> tuple[JobRun, Path]:
    """``assign_local_cells`` of a query shard (shared by the sizes with this coarse index)."""
    cells = coarse.parent / "out" / f"{queries.stem}.cells.h5"
    run = run_job(
        "assign_local_cells",
        n_refs,
        "assign_local_cells.py",
        args,
        tag=f"{tag}.assign_local_cells_{queries.stem}",
        input={"queries": str(queries), "coarse": str(coarse)},
        output={"cells": str(cells)},
        params={"search": args.config["local"]["search"]},
    )
    return run, cells


def search_job(
    name: str, n_refs: int, queries: Path, files: list[Path], cells: Path, args
) -> JobRun:
    out = cells.parent / f"{name}.h5"
    return run_job(
        "local_search",
        n_refs,
        "local_search_block.py",
        args,
        tag=name,
        input={
            "queries": str(queries),
            "references": [str(p) for p in files],
            "cells": [str(cells)],
        },
        output={"neighbors": str(out)},
        params={
            "search": args.config["local"]["search"],
            "gpu_lock_dir": str(args.work / "locks"),
        },
    )


def read_nlist(coarse: Path) -> int:
    import faiss

    return int(faiss.extract_index_ivf(faiss.read_index(str(coarse))).nlist)


def job_layout(
    shard_rows: range, sizes: list[int], nprobe: int, nlist: int
) -> tuple[int, int, float]:
    """A search job over these shards: shards, merged runs (the workflow's own
    ``plan_runs``), reference descriptors in the probed cells per query descriptor (nprobe ×
    the mean list length)."""
    from copydetect.local_search import RUN_DESCRIPTORS, plan_runs

    part = [sizes[i] for i in shard_rows]
    runs = len(plan_runs(list(shard_rows), part, RUN_DESCRIPTORS))
    return len(part), runs, nprobe * sum(part) / nlist


def search_cost_model(runs: list[JobRun]) -> dict[str, float]:
    """Least squares CPU = o + L·shards + r·q·runs + s·q·scanned over ``local_search`` jobs:
    o per job (interpreter, imports, the query shard), L per shard read and merged, r per
    (query descriptor, run) (the ~1 µs visit of each probed cell, the run's top-k merge), s per
    reference descriptor scanned."""
    x = np.array(
        [[1, r.shards, r.query_descriptors * r.runs, r.query_descriptors * r.scanned] for r in runs]
    )
    y = np.array([r.cpu_s for r in runs])
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    return dict(zip(["overhead", "per_shard", "per_qdesc_run", "per_scanned"], coef, strict=True))


def search_job_cpu(
    model: dict[str, float], shards: float, q: float, runs: float, scanned: float
) -> float:
    return (
        model["overhead"]
        + model["per_shard"] * shards
        + model["per_qdesc_run"] * q * runs
        + model["per_scanned"] * q * scanned
    )


# --- 1M plan ------------------------------------------------------------------------------------

PLAN_REFS, PLAN_QUERIES, PLAN_PER_IMAGE = 1_000_000, 50_000, 600  # as the 51,636 estimate


def plan_nlist(training: Path, args: argparse.Namespace) -> int:
    """nlist the default config gives at 1M references with this benchmark's training set."""
    from copydetect.local_index import LocalIndexParams, choose_nlist
    from copydetect.shards import read_shard_ids

    params = LocalIndexParams.from_mapping(args.config["local"]["index"])
    images = len(read_shard_ids(training))
    return choose_nlist(params, pow2(PLAN_REFS), images, sum(descriptor_counts([training])))


def plan_1m(large: SizeRuns, small: SizeRuns, nlist: int, args) -> Plan:
    """The 1M × 50k plan with the default config: each job's CPU from the unit costs measured
    at the large size (same quantizer kind, HNSW above 4,096 cells): index CPU per descriptor,
    cell assignment per query descriptor, the search cost model (``search_cost_model``) with
    1M's runs and scanned descriptors per job, the candidates' merge per (query descriptor,
    group)."""
    from copydetect.local_search import RUN_DESCRIPTORS, plan_runs

    group = args.config["local"]["reference_shards_per_job"]
    nprobe = min(args.config["local"]["search"]["nprobe"], nlist)
    shard_desc = args.shard_size * PLAN_PER_IMAGE
    q = args.config["sharding"]["queries"]["shard_size"] * PLAN_PER_IMAGE
    density = PLAN_PER_IMAGE / (args.ref_descriptors / large.n_refs)
    model = search_cost_model([*large.search, *large.extra_search])
    runs = len(plan_runs(list(range(group)), [shard_desc] * group, RUN_DESCRIPTORS))
    scanned = nprobe * group * shard_desc / nlist
    search = search_job_cpu(
        model | {"per_shard": model["per_shard"] * density}, group, q, runs, scanned
    )
    full, tiny = large.assign, large.assign_tiny
    per_q = (full.cpu_s - tiny.cpu_s) / (full.query_descriptors - tiny.query_descriptors)
    cand = [large.candidates, small.candidates]
    x = np.array([[1.0, r.query_descriptors * r.shards] for r in cand])
    o, c = np.linalg.lstsq(x, np.array([r.cpu_s for r in cand]), rcond=None)[0]
    groups = math.ceil(math.ceil(PLAN_REFS / args.shard_size) / group)
    return Plan(
        references=PLAN_REFS,
        ref_per_image=PLAN_PER_IMAGE,
        queries=PLAN_QUERIES,
        query_per_image=PLAN_PER_IMAGE,
        shard_size=args.shard_size,
        query_shard_size=args.config["sharding"]["queries"]["shard_size"],
        group=group,
        nlist=nlist,
        runs_per_job=runs,
        fit_cpu_s=large.fit.cpu_s,
        index_job_s=sum(r.cpu_s for r in large.index) / args.indexed_descriptors * shard_desc,
        assign_job_s=tiny.cpu_s + per_q * q,
        search_job_s=search,
        candidates_job_s=max(float(o), 0.0) + max(float(c), 0.0) * q * groups,
    )


def search_rss_at(large: SizeRuns, qcount: int, args) -> float:
    """Peak RSS of a 1M ``local_search`` job: the largest measured one (its runs are as large:
    ``RUN_DESCRIPTORS``), plus the query side's growth to a full query shard of 600-descriptor
    images (MiB per query descriptor measured between the one-shard jobs with the full and the
    4-query shard)."""
    tiny, one = large.extra_search[0], large.extra_search[2]
    per_qdesc = (one.rss_mib - tiny.rss_mib) / max(
        one.query_descriptors - tiny.query_descriptors, 1
    )
    target = args.config["sharding"]["queries"]["shard_size"] * PLAN_PER_IMAGE
    return max(r.rss_mib for r in large.search) + per_qdesc * max(target - qcount, 0)


# --- report -------------------------------------------------------------------------------------


def job_row(label: str, runs: list[JobRun]) -> str:
    cpu = [r.cpu_s for r in runs]
    span = f"{min(cpu):.1f}–{max(cpu):.1f}" if len(runs) > 1 else f"{cpu[0]:.1f}"
    return (
        f"| {label} | {len(runs)} | {span} | {sum(cpu):.1f} | "
        f"{max(r.wall_s for r in runs):.1f} | {max(r.rss_mib for r in runs):.0f} |"
    )


def describe(v: Variant) -> str:
    return "default" if not v.overrides else ", ".join(f"{k}: {x:,}" for k, x in v.overrides)


def report(
    runs: list[SizeRuns], exact: list[ExactResult], recall: dict, plan: Plan, args, info
) -> str:
    small, large = runs[0], runs[1]
    n_queries = info["queries"]
    group = args.config["local"]["reference_shards_per_job"]
    per_query = [r.query_side_cpu(group) / n_queries for r in runs]
    side_rss = [max(j.rss_mib for j in [r.assign, *r.search, r.candidates]) for r in runs]
    local = args.config["local"]
    lines = [
        HEADING,
        "",
        *header_lines(large, small, n_queries, info, args),
        "",
        "| |R| | nlist | job | jobs | CPU-s per job | CPU-s total | max wall s | "
        "max peak RSS MiB |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        head = f"| {r.n_refs:,} | {r.nlist:,} "
        for label, jobs in (
            ("`fit_local_index`", [r.fit]),
            ("`index_local_shard`", r.index),
            ("`assign_local_cells`", [r.assign]),
            ("`local_search`", r.search),
            ("`local_candidates`", [r.candidates]),
        ):
            lines.append(head + job_row(label, jobs))
    lines += [
        "",
        "Query side (`assign_local_cells` + `local_search` + `local_candidates` of one query "
        "shard over the whole set; each job's CPU includes its interpreter start and imports), "
        "and candidate recall (the true reference among the local candidates: ≥ "
        f"{local['candidates']['min_votes']} votes and rank ≤ "
        f"{local['candidates']['candidates_per_query']}):",
        "",
        "| |R| | nlist | search runs (shards) | CPU-s per query | peak RSS per job MiB | "
        f"candidate recall ivf vs exact flat, sampled true pairs | ivf, all {recall['n_all']} "
        "true pairs |",
        "|---:|---:|---|---:|---:|---|---:|",
    ]
    for i, r in enumerate(runs):
        layout = ", ".join(f"{j.runs} ({j.shards})" for j in r.search)
        if not r.complete:
            lines.append(
                f"| {r.n_refs:,} | {r.nlist:,} | {layout} | {per_query[i]:.3f} (model) | "
                f"{side_rss[i]:.0f} | not measured ({len(r.index)} of {r.total_shards} shards "
                "indexed) | — |"
            )
            continue
        lines.append(
            f"| {r.n_refs:,} | {r.nlist:,} | {layout} | {per_query[i]:.3f} | {side_rss[i]:.0f} "
            f"| {recall_cell(exact, recall['ivf_exact_pairs'][i], r.n_refs)} | "
            f"{recall['ivf_all'][i]:.3f} |"
        )
    lines += ["", *verdict_lines(runs, exact, recall, per_query, side_rss, args), ""]
    lines += [*model_lines(large, args), *plan_lines(plan, large, info), ""]
    return "\n".join(lines)


def header_lines(large: SizeRuns, small: SizeRuns, n_queries: int, info: dict, args) -> list:
    local = args.config["local"]
    cmd = "`.venv/bin/python benchmarks/local_scale.py" + (" --quick" if args.quick else "")
    cmd += f" --workers {args.workers}" if args.workers > 1 else ""
    cmd += f" --exact-queries-large {args.exact_queries_large}" + "`"
    return [
        f"{datetime.date.today()}, {platform.node()}, {cpu_model()}, {os.cpu_count()} cores "
        f"(shared with other work), faiss-cpu (dynamic dispatch, AVX2), jobs with "
        f"{args.threads} threads. Measured jobs: {info['job_cpu_s'] / 60:.0f} CPU-min with the "
        f"exact baseline, {info['job_wall_s'] / 60:.0f} min of job wall time on the shared "
        f"cores. Command: {cmd} with `--sift` and `--ground-truth` pointing at the "
        "500-reference benchmark's SIFT shards and ground truth (the exact baseline's "
        "`exact.json` carried over from the previous run: same shards and vote settings).",
        "",
        f"Data (the script's docstring has the details): reference shards of "
        f"{args.shard_size:,} images, {large.n_refs // args.shard_size} at "
        f"{large.n_refs:,} references, the {small.n_refs:,} set being the first "
        f"{small.n_refs // args.shard_size}. The 500 real references (mean "
        f"{info['real_per_image']:.0f} descriptors) are spread over those; the rest is "
        f"padding made of {info['n_bases']} real images that are neither references nor copies "
        "(the training images, the distractor queries) × the 8 dihedral transforms of the "
        "SIFT grid × jittered variants (a random 70–100 % of the keypoints, Gaussian noise "
        f"σ = {args.jitter:g} per byte on RootSIFT rows of norm 255). "
        f"{args.ref_descriptors:,} reference descriptors at {large.n_refs:,} (mean "
        f"{info['ref_per_image']:.0f} per image). Queries: the benchmark's real query shard, "
        f"{n_queries} queries ({info['true_queries']} true copies, "
        f"{n_queries - info['true_queries']} distractors), "
        f"{info['query_descriptors']:,} descriptors, one view (the mirrored view doubles the "
        "query side). The coarse quantizer is fitted on the training images × 8 transforms, "
        f"clean and {args.training_copies}× jittered ({info['training_descriptors']:,} "
        "descriptors, never the references). Config: the default `local` (k "
        f"{local['search']['k']}, nprobe {local['search']['nprobe']}, "
        f"`reference_shards_per_job` {local['reference_shards_per_job']}, `local.index` "
        f"{dict(local['index'])}); `nlist: auto` gives {small.nlist:,} cells at "
        f"{small.n_refs:,} and {large.nlist:,} at {large.n_refs:,} (auto asks "
        f"{info['auto_nlist_large']:,}; {info['training_descriptors']:,} training descriptors "
        f"/ 39 per cell cap it).",
    ]


def recall_cell(exact: list[ExactResult], ivf_recalls: list[float], n_refs: int) -> str:
    """ivf vs exact per sample size (the exact where it ran at this size)."""
    cells = {}
    for e, ivf in zip(exact, ivf_recalls, strict=True):
        there = e.recall if e.n_refs == n_refs else None
        if len(e.truth) not in cells or there is not None:
            cells[len(e.truth)] = (ivf, there)
    return "; ".join(
        f"{ivf:.3f} vs {there:.3f} ({n} pairs)"
        if there is not None
        else f"{ivf:.3f} vs exact not run at this size ({n} pairs)"
        for n, (ivf, there) in cells.items()
    )


def verdict_lines(runs, exact, recall, per_query, side_rss, args) -> list:
    from copydetect.local_search import RUN_DESCRIPTORS

    small, large = runs[0], runs[1]

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    def gaps(i: int) -> str:
        found = [
            f"{(ivf - e.recall) * 100:+.1f} points on {len(e.truth)} pairs"
            for e, ivf in zip(exact, recall["ivf_exact_pairs"][i], strict=True)
            if e.n_refs == runs[i].n_refs
        ]
        return ", ".join(found) or "no exact baseline at this size"

    ratio, rss_ratio = per_query[1] / per_query[0], side_rss[1] / side_rss[0]
    large_gap = gaps(1) if large.complete else "not measured (partial run)"
    partial = (
        []
        if large.complete
        else [
            f"- Partial run: {len(large.index)} of {large.total_shards} shards of the "
            f"{large.n_refs:,} set indexed and searched; its query side is the search cost "
            "model below over the set's groups, and its candidate recall is not measured."
        ]
    )
    return partial + [
        f"- {large.n_refs:,} (nlist {large.nlist:,}) vs {small.n_refs:,} (nlist "
        f"{small.nlist:,}): CPU per query **{ratio:.2f}×** for "
        f"{large.n_refs // small.n_refs}× references (target ≤ 3: {verdict(ratio <= 3)}); "
        f"peak RSS per query-side job **{rss_ratio:.2f}×** ({side_rss[0]:.0f} → "
        f"{side_rss[1]:.0f} MiB; target ≤ 1.2: {verdict(rss_ratio <= 1.2)}); "
        f"`index_local_shard` {max(j.rss_mib for j in small.index):.0f} → "
        f"{max(j.rss_mib for j in large.index):.0f} MiB.",
        f"- Candidate recall ivf − exact: at {small.n_refs:,} {gaps(0)}; at "
        f"{large.n_refs:,} {large_gap}. The exact scan cost {exact[-1].cpu_s:.0f} CPU-s for "
        f"{len(exact[-1].truth)} queries at {exact[-1].n_refs:,}, hence the samples.",
        "- Against the previous measurement of this section (7.93×: nlist 4,096 at both sizes, "
        "nprobe 16, every shard searched on its own, cells assigned in every search job): "
        "(1) the lists follow the collection (a training set of ≥ 39 × 32,768 descriptors: "
        "32,768 cells at 100,000), so the descriptors scanned per query descriptor stay about "
        "flat; (2) a job merges its group's shard indexes into runs of ≤ "
        f"{RUN_DESCRIPTORS:,} descriptors (faiss `merge_from`; ties ordered by each row's "
        "global key, so results stay bit-identical) and visits each probed cell once per run "
        "instead of once per shard; (3) `assign_local_cells` assigns a query shard's cells once "
        "for all its groups; (4) the HNSW quantizer above 4,096 cells searches with efSearch 16 "
        "instead of 128.",
        "- Why these values (in-process, one thread, 20,000 query descriptors of this query "
        "shard, this session): HNSW over 16,384 k-means cells: efSearch 16 finds 96.7 % of the "
        "8 exact nearest cells (the nearest in 98.7 %) for 40 µs per descriptor, efSearch 32 "
        "99.2 % for 69 µs, 128 (before) 99.97 % for 213 µs, a flat quantizer 83 µs; a two-level "
        "IVF quantizer over the same cells (√nlist groups) was worse at equal cost (probe 16: "
        "97.5 % for 42 µs, probe 8: 90.4 % for 23 µs), dropped. A probed cell costs ≈ 1 µs per "
        "visit however short it is (scan of 20,000 query descriptors, nprobe 8, one shard: "
        "9.5 µs at 65,536 cells of ≈ 9.5 descriptors, 1.7 µs with nprobe 1), and ≈ 14 ns per "
        "descriptor scanned (8-bit codes): merging a group's shards pays the first once per run. "
        "Merging 5 shards at 4,096 cells: 86 µs per query descriptor against 5 × 25 µs.",
    ]


def model_lines(large: SizeRuns, args) -> list:
    jobs = [*large.search, *large.extra_search]
    m = search_cost_model(jobs)
    a = large.assign
    per_q = (a.cpu_s - large.assign_tiny.cpu_s) / (
        a.query_descriptors - large.assign_tiny.query_descriptors
    )
    return [
        f"Search cost model, least squares over the {len(jobs)} `local_search` jobs at "
        f"{large.n_refs:,} ("
        + ", ".join(f"{j.shards} shards in {j.runs} runs × {j.query_descriptors:,} q" for j in jobs)
        + "): CPU = o + L·shards + r·q·runs + s·q·scanned, q = query descriptors, scanned = "
        "reference descriptors in the probed cells per query descriptor (nprobe × mean list "
        f"length): o = {m['overhead']:.1f} s per job, L = {m['per_shard']:.2f} s per shard "
        f"read and merged, r = {m['per_qdesc_run'] * 1e6:.2f} µs per (query descriptor, run), "
        f"s = {m['per_scanned'] * 1e9:.1f} ns per descriptor scanned. Cell assignment "
        f"(`assign_local_cells`, {large.nlist:,} cells): {per_q * 1e6:.1f} µs per query "
        "descriptor.",
        "",
    ]


def plan_lines(plan: Plan, large: SizeRuns, info: dict) -> list:
    hours = plan.cpu_hours()
    total_h = sum(hours.values())
    lists = plan.references * plan.ref_per_image / plan.nlist
    return [
        f"### 1M-reference plan with the default config ({plan.references:,} references × "
        f"{plan.ref_per_image}, {plan.queries:,} queries × {plan.query_per_image}, one query "
        "view, as in the 51,636 CPU-hour flat estimate)",
        "",
        f"- nlist: {plan.nlist:,} (`nlist: auto` at 1M, capped by `max_training_descriptors` "
        f"{info['max_training']:,} / 39; needs a training set of ≥ {39 * plan.nlist:,} "
        f"descriptors); lists of ≈ {lists:,.0f} descriptors.",
        f"- Jobs: 1 `fit_local_index`, {plan.ref_shards} `index_local_shard` (one per reference "
        f"shard of {plan.shard_size:,}), {plan.query_shards} `assign_local_cells`, "
        f"{plan.query_shards} query shards × {plan.groups} groups = "
        f"{plan.query_shards * plan.groups:,} `local_search` ({plan.group} shards in "
        f"{plan.runs_per_job} runs each), {plan.query_shards} `local_candidates`.",
        f"- Per job: `fit_local_index` {plan.fit_cpu_s / 60:.1f} CPU-min (measured, same nlist), "
        f"peak {large.fit.rss_mib:.0f} MiB; `index_local_shard` {plan.index_job_s:.0f} CPU-s "
        f"(per descriptor as measured at {large.n_refs:,}), peak ≈ {info['index_rss_1m']:.0f} "
        f"MiB; `assign_local_cells` {plan.assign_job_s:.0f} CPU-s; `local_search` "
        f"{plan.search_job_s / 60:.1f} CPU-min ({plan.query_shard_size:,} queries × "
        f"{plan.query_per_image} descriptors; ≈ {plan.search_job_s / 60 / 4:.1f} min wall on "
        f"the rule's 4 threads if it scales), peak ≈ {info['search_rss_1m']:.0f} MiB (its runs "
        "are capped as at 100,000; the query shard grows); `local_candidates` "
        f"{plan.candidates_job_s:.0f} CPU-s.",
        "- CPU-hours: "
        + ", ".join(f"`{k}` {v:,.1f}" for k, v in hours.items())
        + f": **{total_h:,.0f} CPU-hours** per query view against {TODAY_FLAT_CPU_HOURS:,} "
        f"(flat), **{TODAY_FLAT_CPU_HOURS / total_h:,.0f}× less**; the mirrored view doubles "
        "the assignment, search and candidates terms.",
        "- Model: the search cost model above with 1M's runs and scanned descriptors per job "
        "(L scaled by the descriptors per shard); assignment and indexing per descriptor as "
        f"measured at {large.n_refs:,} (same nlist, same HNSW); the candidates' merge per "
        "(query descriptor, group) from the two `local_candidates` jobs. With nlist at "
        f"{plan.nlist:,} the scan grows with the lists (the `s` term dominates at 1M); a "
        "training set that lets nlist follow the collection (`nlist: auto` asks 524,288 at "
        "1M, hence ≥ 20M training descriptors and a larger `max_training_descriptors`) "
        "would keep it flat.",
    ]


def unique_jobs(runs: list[SizeRuns]) -> list[JobRun]:
    """Every measured job once (sizes share the fit and shard index jobs)."""
    seen, jobs = set(), []
    for r in runs:
        assign = [r.assign] if r.assign else []
        for j in [r.fit, *r.index, *assign, *r.search, r.candidates, *r.extra_search]:
            if id(j) not in seen and (j.name, j.cpu_s, j.wall_s) not in seen:
                seen |= {id(j), (j.name, j.cpu_s, j.wall_s)}
                jobs.append(j)
    return jobs


def query_shard(args: argparse.Namespace) -> Path:
    """The benchmark's query shard (its first 60 queries in a ``--quick`` run)."""
    queries = args.sift / "queries" / "s0000.h5"
    if args.quick:
        small = args.work / "q_quick.h5"
        if not small.exists():
            write_sift_shard(small, read_sift_shard(queries)[:60])
        return small
    return queries


def measure_and_report(real, shards, training, exact, args, start) -> None:
    from copydetect.local_index import auto_nlist

    queries = query_shard(args)
    small_n, large_n = args.sizes
    variants = [Variant("default", small_n), Variant("default", large_n)]
    for nlist in args.scaled:
        overrides = (
            ("nlist", nlist),
            ("max_training_descriptors", 39 * nlist),
            ("iterations", args.scaled_iterations),
        )
        variants.append(Variant(f"nlist{nlist}", large_n, overrides))
    runs = [measure_size(v, shards, training, queries, args) for v in variants]
    if args.index_only:
        return
    from copydetect.shards import read_shard_ids

    present = set(read_shard_ids(queries))
    all_truth = sample_truth(real.ground_truth, len(real.ground_truth))
    all_truth = {q: r for q, r in all_truth.items() if q in present}
    recall = {"n_all": len(all_truth), "ivf_exact_pairs": [], "ivf_all": []}
    for r in runs:
        cands = pd.read_csv(r.candidates_path, dtype={"query_id": str, "reference_id": str})
        recall["ivf_exact_pairs"].append([candidate_recall(cands, e.truth) for e in exact])
        recall["ivf_all"].append(candidate_recall(cands, all_truth))
    counts = descriptor_counts(shards[: large_n // args.shard_size])
    args.ref_descriptors = sum(counts)
    args.indexed_descriptors = sum(counts[: len(runs[1].index)])
    qcount = sum(descriptor_counts([queries]))
    training_count = sum(descriptor_counts([training]))
    per_image = training_count / len(read_shard_ids(training))
    list_length = args.config["local"]["index"]["list_length"]
    ref_per_image = sum(counts) / large_n
    small, large = runs[0], runs[1]
    cap = args.config["local"]["index"]["max_training_descriptors"] // 39
    info = {
        "queries": len(present),
        "true_queries": len(all_truth),
        "query_descriptors": qcount,
        "ref_per_image": ref_per_image,
        "real_per_image": float(np.mean([len(f.descriptors) for f in real.references])),
        "n_bases": len(real.bases),
        "training_descriptors": training_count,
        "capped_nlist": 1 << (cap.bit_length() - 1),
        "auto_nlist_large": auto_nlist(pow2(large_n), per_image, list_length),
        "auto_nlist_1m": auto_nlist(pow2(PLAN_REFS), per_image, list_length),
        "plan_nlist": plan_nlist(training, args),
        "max_training": args.config["local"]["index"]["max_training_descriptors"],
        "search_rss_1m": search_rss_at(large, qcount, args),
        "index_rss_1m": max(j.rss_mib for j in large.index)
        + 2 * 128 * args.shard_size * max(PLAN_PER_IMAGE - ref_per_image, 0) / 2**20,
        "total_s": time.perf_counter() - start,
        "job_cpu_s": sum(j.cpu_s for j in unique_jobs(runs))
        + exact[0].cpu_s
        + (exact[-1].cpu_s if exact[-1].n_refs != exact[0].n_refs else 0.0),
        "job_wall_s": sum(j.wall_s for j in unique_jobs(runs)),
    }
    plan = plan_1m(large, small, info["plan_nlist"], args)
    figures = {
        "runs": [asdict(r) | {"candidates_path": str(r.candidates_path)} for r in runs],
        "recall": recall,
        "exact": [asdict(e) for e in exact],
        "plan": asdict(plan) | {"cpu_hours": plan.cpu_hours()},
        "info": info,
    }
    (args.work / "figures.json").write_text(json.dumps(figures, indent=1, default=str))
    text = report(runs, exact, recall, plan, args, info)
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
    parser.add_argument(
        "--exact-queries-large", type=int, default=12, help="of those, carried to the large size"
    )
    parser.add_argument("--exact-chunk", type=int, default=262_144, help="reference rows/step")
    parser.add_argument("--exact-threads", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="threads of the rule jobs")
    parser.add_argument("--workers", type=int, default=1, help="rule jobs run side by side")
    parser.add_argument(
        "--large-shards",
        type=int,
        default=0,
        help="index and search only this many shards of the large set (0 = all); its query "
        "side is then the search cost model over all its groups",
    )
    parser.add_argument(
        "--scaled",
        type=int,
        nargs="*",
        default=[],
        help="also measure the large size with this nlist (max_training_descriptors = 39 × it)",
    )
    parser.add_argument("--scaled-iterations", type=int, default=10, help="k-means, --scaled")
    parser.add_argument("--jitter", type=float, default=4.0, help="padding noise per byte")
    parser.add_argument(
        "--training-copies", type=int, default=2, help="jittered training copies per transform"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sift", type=Path, default=REAL_SIFT, help="the benchmark's SIFT")
    parser.add_argument("--ground-truth", type=Path, default=GROUND_TRUTH)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.md")
    parser.add_argument("--fresh", action="store_true", help="rerun jobs measured before")
    parser.add_argument("--index-only", action="store_true", help="fit and index, no search")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.shard_size, args.exact_queries = [1000, 4000], 500, 8
        args.exact_queries_large = 4
        args.work = args.work / "quick"
    args.config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    if args.quick:  # a cheap coarse quantizer for the smoke run
        args.config["local"]["index"] |= {"max_training_descriptors": 40_000, "iterations": 2}
    return args


def main() -> None:
    args = parse_args()
    if args.job:
        import scale

        scale.run_rule_job(args.job)
        own = resource.getrusage(resource.RUSAGE_SELF)
        print(f"CPU_S {own.ru_utime + own.ru_stime:.3f}", flush=True)
        return None
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    real = load_real(args)
    shards = write_reference_shards(real, args)
    training = write_training_shard(real, args)
    print(f"data ready in {time.perf_counter() - start:.0f} s", flush=True)
    if args.quick:  # only the true pairs of the queries searched
        from copydetect.shards import read_shard_ids

        present = set(read_shard_ids(query_shard(args)))
        real.ground_truth = real.ground_truth[real.ground_truth["query_id"].isin(present)]
    exact = exact_baseline(real, shards, args)
    if args.exact_only:
        return
    measure_and_report(real, shards, training, exact, args, start)


if __name__ == "__main__":
    main()
