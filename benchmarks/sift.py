"""SIFT stage throughput against a plain OpenCV loop, and verified pairs per second.

Makes ~200 images derived from scikit-image's bundled photographs (random crop, rotation,
rescale to ≤ 512 px like ingest, brightness), stored both as JPEG files and as N image shards.
Per round, with N worker processes (one shard each, ``cv2.setNumThreads(1)``):

* ours: :func:`copydetect.sift.sift_shard` (HDF5 read, gray decode, shrink, SIFT, RootSIFT,
  deterministic sort, atomic HDF5 write);
* baseline: read each JPEG file, ``cv2.imdecode`` to gray, resize, ``detectAndCompute`` with the
  same SIFT parameters, nothing written.

Rounds are interleaved (baseline, ours, baseline, ours, …) and the median is reported. Then
:func:`copydetect.verify.verify_candidates` verifies 500 pairs (50 queries, random views of
the same photographs, a quarter mirrored, × 10 random references) with N processes, with and
without the flip path.

    .venv/bin/python benchmarks/sift.py --images 200 --rounds 5
"""

from __future__ import annotations

import argparse
import datetime
import io
import itertools
import multiprocessing
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from results_file import replace_section

from copydetect.shards import ImageRecord, iter_image_records, write_image_shard
from copydetect.sift import SiftParams, sift_shard
from copydetect.verify import VerifyParams, verify_candidates

ROOT = Path(__file__).resolve().parents[1]

WORK = ROOT / "benchmarks" / "work" / "sift"
HEADING = "## SIFT stage and pair verification (benchmarks/sift.py)"
# scikit-image photographs bundled in its wheel (no download); cat is chelsea, so left out.
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field",
          "immunohistochemistry", "moon", "retina", "rocket")  # fmt: skip


def load_photos() -> list[np.ndarray]:
    import skimage.data

    photos = []
    for name in PHOTOS:
        rgb = getattr(skimage.data, name)()
        photos.append(np.stack([rgb] * 3, axis=-1) if rgb.ndim == 2 else rgb[..., :3])
    return photos


def derive(photo: np.ndarray, rng: np.random.Generator, max_side: int = 512) -> np.ndarray:
    """A random view of a photo: crop, rotation, rescale to ``max_side``, brightness."""
    h, w = photo.shape[:2]
    ch, cw = (int(s * rng.uniform(0.5, 1.0)) for s in (h, w))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    view = photo[y : y + ch, x : x + cw]
    rotation = cv2.getRotationMatrix2D((cw / 2, ch / 2), rng.uniform(-30, 30), 1.0)
    view = cv2.warpAffine(view, rotation, (cw, ch), borderMode=cv2.BORDER_REFLECT)
    scale = max_side / max(ch, cw) * rng.uniform(0.8, 1.0)
    view = cv2.resize(view, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.clip(view.astype(np.float32) * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_images(n_images: int, n_shards: int) -> tuple[list[Path], list[list[Path]]]:
    """Write the derived images as JPEG files and as image shards; returns shard and file paths."""
    rng = np.random.default_rng(0)
    photos = load_photos()
    records = [
        ImageRecord(f"R{i:04d}", jpeg_bytes(derive(photos[i % len(photos)], rng)), (0, 0))
        for i in range(n_images)
    ]
    shards, files = [], []
    for s in range(n_shards):
        part = records[s::n_shards]
        folder = WORK / "jpeg" / f"s{s:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for r in part:
            (folder / f"{r.id}.jpg").write_bytes(r.jpeg)
        files.append(sorted(folder.glob("*.jpg")))
        shards.append(WORK / "images" / f"s{s:04d}.h5")
        write_image_shard(shards[-1], part)
    return shards, files


def baseline_shard(files: list[Path], params: SiftParams) -> float:
    """The plain OpenCV loop: decode to gray, shrink, detectAndCompute; returns CPU seconds."""
    start = time.process_time()
    cv2.setNumThreads(1)
    sift = cv2.SIFT_create(
        nfeatures=params.max_keypoints,
        contrastThreshold=params.contrast_threshold,
        edgeThreshold=params.edge_threshold,
    )
    for path in files:
        gray = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE)
        h, w = gray.shape
        scale = params.max_short_side / min(h, w)
        if scale < 1:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        sift.detectAndCompute(gray, None)
    return time.process_time() - start


def ours_shard(shard: Path, params: SiftParams) -> float:
    """:func:`sift_shard` on one image shard; returns CPU seconds."""
    start = time.process_time()
    sift_shard(shard, WORK / "sift" / shard.name, params)
    return time.process_time() - start


def timed_round(function, jobs: list[tuple]) -> tuple[float, float]:
    """Wall seconds and summed worker CPU seconds of ``function`` over ``jobs``, one fork
    worker per job. CPU time barely moves when other jobs share the machine; wall time does."""
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        cpu = sum(pool.starmap(function, jobs))
    return time.perf_counter() - start, cpu


@dataclass
class Throughput:
    """Images per wall second and per CPU second, one entry per round."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, n_images: int, wall: float, cpu: float) -> None:
        self.wall.append(n_images / wall)
        self.cpu.append(n_images / cpu)

    def median(self) -> tuple[float, float]:
        return statistics.median(self.wall), statistics.median(self.cpu)


@dataclass
class Overhead:
    """Single-process images per CPU second, fastest of many short alternating runs: the
    per-image cost least disturbed by other jobs (``timeit`` takes the minimum for that)."""

    images: int
    repeats: int
    base: float
    ours: float


def bench_overhead(shard: Path, files: list[Path], params: SiftParams, n: int = 25) -> Overhead:
    """Our per-image overhead on the first ``n`` images of one shard, in this process."""
    subset = WORK / "images" / "overhead.h5"
    write_image_shard(subset, list(itertools.islice(iter_image_records(shard), n)))
    repeats, base, ours = 12, [], []
    for _ in range(repeats):
        base.append(baseline_shard(files[:n], params))
        ours.append(ours_shard(subset, params))
    return Overhead(n, repeats, n / min(base), n / min(ours))


def bench_sift(shards, files, params: SiftParams, rounds: int) -> tuple[Throughput, Throughput]:
    """Baseline and ours over interleaved rounds; the order alternates (ABBA) so neither side
    always runs first after a pool start."""
    n_images = sum(len(f) for f in files)
    base, ours = Throughput(), Throughput()
    timed_round(baseline_shard, [(f, params) for f in files])  # warm the page cache
    for i in range(rounds):
        sides = [(base, baseline_shard, files), (ours, ours_shard, shards)]
        for result, function, inputs in sides if i % 2 == 0 else sides[::-1]:
            result.add(n_images, *timed_round(function, [(x, params) for x in inputs]))
        print(
            f"  round {i}: baseline {base.wall[-1]:.1f} img/s ({base.cpu[-1]:.1f}/CPU s), "
            f"ours {ours.wall[-1]:.1f} img/s ({ours.cpu[-1]:.1f}/CPU s)",
            flush=True,
        )
    return base, ours


def make_queries(n_queries: int, n_images: int) -> tuple[Path, Path]:
    """Edited copies of reference images; image shard and SIFT shard paths."""
    rng = np.random.default_rng(1)
    photos = load_photos()
    records = []
    for q in range(n_queries):
        rgb = derive(photos[(q * 7) % len(photos)], rng)
        if q % 4 == 0:
            rgb = np.ascontiguousarray(rgb[:, ::-1])  # a quarter are mirrored copies
        records.append(ImageRecord(f"Q{q:04d}", jpeg_bytes(rgb), (0, 0)))
    images, features = WORK / "queries" / "images.h5", WORK / "queries" / "sift.h5"
    write_image_shard(images, records)
    sift_shard(images, features, SiftParams())
    return images, features


def candidates(n_queries: int, per_query: int, n_images: int, n_shards: int) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    rows = []
    for q in range(n_queries):
        for r in rng.choice(n_images, per_query, replace=False):
            rows.append((f"Q{q:04d}", f"R{r:04d}", f"s{r % n_shards:04d}"))
    return pd.DataFrame(rows, columns=["query_id", "reference_id", "reference_shard"])


def bench_verify(n_shards: int, n_images: int, processes: int, rounds: int) -> dict[str, float]:
    """Median verified pairs/s, with and without the flip path."""
    images, features = make_queries(50, n_images)
    table = candidates(50, 10, n_images, n_shards)
    refs = {f"s{s:04d}": WORK / "sift" / f"s{s:04d}.h5" for s in range(n_shards)}
    speeds = {}
    for flip in (True, False):
        runs = []
        for _ in range(rounds):
            start = time.perf_counter()
            verify_candidates(
                table, features, images, refs, VerifyParams(try_flip=flip), SiftParams(), processes
            )
            runs.append(len(table) / (time.perf_counter() - start))
        speeds[f"flip={flip}"] = statistics.median(runs)
        print(f"  verify try_flip={flip}: {speeds[f'flip={flip}']:.0f} pairs/s", flush=True)
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    # Every worker runs single-threaded OpenCV; the parent too, because a forked child that
    # touches a running OpenCV thread pool crashes or hangs.
    cv2.setNumThreads(1)
    shards, files = make_images(args.images, args.processes)
    params = SiftParams()
    base, ours = bench_sift(shards, files, params, args.rounds)
    (base_wall, base_cpu), (ours_wall, ours_cpu) = base.median(), ours.median()
    print(f"SIFT: ratio {ours_wall / base_wall:.2f} (wall), {ours_cpu / base_cpu:.2f} (CPU)")
    overhead = bench_overhead(shards[0], files[0], params)
    print(f"SIFT, one process, fastest run: ratio {overhead.ours / overhead.base:.2f}")
    speeds = bench_verify(args.processes, args.images, args.processes, args.rounds)
    write_results(args, base, ours, overhead, speeds, os.getloadavg()[1])


def write_results(
    args,
    base: Throughput,
    ours: Throughput,
    overhead: Overhead,
    speeds: dict[str, float],
    load: float,
) -> None:
    cmd = (
        f"`.venv/bin/python benchmarks/sift.py --images {args.images} "
        f"--processes {args.processes} --rounds {args.rounds}`"
    )
    lines = [
        HEADING,
        "",
        f"{datetime.date.today()}, {platform.node()}, {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), OpenCV {cv2.__version__}. "
        f"{args.images} images derived from scikit-image photos (≤ 512 px, JPEG q90), "
        f"{args.processes} processes, one shard each, {args.rounds} interleaved rounds (ABBA "
        f"order). Default `sift` and `verify` config. Command: {cmd}. Target: ours ≥ 0.9× "
        f"baseline. Other jobs may share the machine (5-minute load average at the end: "
        f"{load:.1f}); the last row, the fastest of many short runs in one process, is the "
        "least disturbed by them.",
        "",
        "| measure | baseline: plain OpenCV loop | ours: `sift_shard` | ours / baseline |",
        "|---|---:|---:|---:|",
        *(
            f"| images per {unit}, median | {b:.1f} | {o:.1f} | {o / b:.2f} |"
            for unit, b, o in zip(
                ("wall second", "CPU second"), base.median(), ours.median(), strict=True
            )
        ),
        f"| images per CPU second, 1 process, {overhead.images} images, fastest of "
        f"{overhead.repeats} alternating runs | {overhead.base:.1f} | {overhead.ours:.1f} "
        f"| {overhead.ours / overhead.base:.2f} |",
        "",
        "Baseline: read JPEG file, `cv2.imdecode` to gray, resize, `detectAndCompute`, nothing "
        "written. Ours adds the HDF5 shard read and atomic write, RootSIFT and the "
        "deterministic keypoint sort.",
        "",
        f"| verification (`verify_candidates`, 500 pairs, {args.processes} processes) | pairs/s |",
        "|---|---:|",
        f"| try_flip=true (default; one extra SIFT of the mirrored query per query) "
        f"| {speeds['flip=True']:.0f} |",
        f"| try_flip=false | {speeds['flip=False']:.0f} |",
        "",
    ]
    replace_section(ROOT / "benchmarks" / "results.md", HEADING, "\n".join(lines))


if __name__ == "__main__":
    main()
