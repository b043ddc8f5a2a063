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
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

from copydetect.shards import ImageRecord, write_image_shard  # noqa: E402
from copydetect.sift import SiftParams, sift_shard  # noqa: E402
from copydetect.verify import VerifyParams, verify_candidates  # noqa: E402

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


def baseline_shard(files: list[Path], params: SiftParams) -> int:
    """The plain OpenCV loop: decode to gray, shrink, detectAndCompute; returns keypoints."""
    cv2.setNumThreads(1)
    sift = cv2.SIFT_create(
        nfeatures=params.max_keypoints,
        contrastThreshold=params.contrast_threshold,
        edgeThreshold=params.edge_threshold,
    )
    total = 0
    for path in files:
        gray = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE)
        h, w = gray.shape
        scale = params.max_short_side / min(h, w)
        if scale < 1:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        keypoints, _ = sift.detectAndCompute(gray, None)
        total += len(keypoints)
    return total


def ours_shard(shard: Path, params: SiftParams) -> int:
    return sift_shard(shard, WORK / "sift" / shard.name, params).n_images


def timed_round(function, jobs: list[tuple]) -> float:
    """Wall seconds for ``function`` over ``jobs`` with one fork worker per job."""
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        pool.starmap(function, jobs)
    return time.perf_counter() - start


def bench_sift(shards, files, params: SiftParams, rounds: int) -> tuple[float, float]:
    """Median images/s of the baseline and of ours over interleaved rounds."""
    n_images = sum(len(f) for f in files)
    base, ours = [], []
    timed_round(baseline_shard, [(f, params) for f in files])  # warm the page cache
    for _ in range(rounds):
        base.append(n_images / timed_round(baseline_shard, [(f, params) for f in files]))
        ours.append(n_images / timed_round(ours_shard, [(s, params) for s in shards]))
        print(f"  round: baseline {base[-1]:.1f} img/s, ours {ours[-1]:.1f} img/s", flush=True)
    return statistics.median(base), statistics.median(ours)


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
    print(f"SIFT: baseline {base:.1f} img/s, ours {ours:.1f} img/s, ratio {ours / base:.2f}")
    speeds = bench_verify(args.processes, args.images, args.processes, args.rounds)
    write_results(args, base, ours, speeds, os.getloadavg()[1])


def write_results(args, base: float, ours: float, speeds: dict[str, float], load: float) -> None:
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
        f"{args.processes} processes, one shard each, median of {args.rounds} interleaved "
        f"rounds. Default `sift` and `verify` config. Command: {cmd}. Target: ours ≥ 0.9× "
        f"baseline. 5-minute load average at the end: {load:.1f} (other jobs share the "
        "machine: compare the two columns of one run, not runs).",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| plain OpenCV loop (decode gray → resize → detectAndCompute) | {base:.1f} img/s |",
        f"| `sift_shard` (+ HDF5 read/write, RootSIFT, sort) | {ours:.1f} img/s |",
        f"| ratio ours / baseline | {ours / base:.2f} |",
        f"| `verify_candidates`, 500 pairs, try_flip=true | {speeds['flip=True']:.0f} pairs/s |",
        f"| `verify_candidates`, 500 pairs, try_flip=false | {speeds['flip=False']:.0f} pairs/s |",
        "",
    ]
    replace_section(ROOT / "benchmarks" / "results.md", HEADING, "\n".join(lines))


def replace_section(results: Path, heading: str, text: str) -> None:
    """Replace the section starting with ``heading`` (up to the next ``## ``) or append it."""
    old = results.read_text() if results.exists() else "# Benchmark results\n\n"
    start = old.find(heading)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = old.find("\n## ", start + len(heading))
        rest = old[end + 1 :] if end >= 0 else ""
        new = old[:start] + text.rstrip("\n") + "\n" + ("\n" + rest if rest else "")
    results.write_text(new)


if __name__ == "__main__":
    main()
