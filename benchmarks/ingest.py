"""Ingest throughput vs a plain Pillow decode -> resize -> encode loop, same images and processes.

Generates realistic JPEGs (about 1024x768, crops of scikit-image photos with jitter) under
``benchmarks/work/ingest/``, splits them into one contiguous shard per process, and times
``ingest_shard`` (checks, RGB conversion, LANCZOS resize, JPEG encode, HDF5 + rejects write)
against the plain loop on the same partition. Variants run interleaved for several rounds after a
warm-up; the median images/s of each is reported and a section is written to
``benchmarks/results.md`` (replacing an older section with the same heading).

    .venv/bin/python benchmarks/ingest.py [--images 300] [--processes N] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime
import io
import multiprocessing
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path

import numpy as np
import PIL
import skimage.data
from PIL import Image
from results_file import replace_section

from copydetect.ingest import IngestParams, ingest_shard

ROOT = Path(__file__).resolve().parents[1]

HEADING = "## Ingest throughput"
TARGET_RATIO = 0.85
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina")

Shard = list[tuple[str, str]]  # (id, path)


@dataclass(frozen=True)
class Result:
    """Median throughput of both variants over the timed rounds."""

    plain: float  # images/s
    ingest: float
    plain_runs: list[float]
    ingest_runs: list[float]

    @property
    def ratio(self) -> float:
        return self.ingest / self.plain


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` JPEGs of about 1024x768 (a quarter portrait); reuses a complete earlier set."""
    paths = [folder / f"img{i:04d}.jpg" for i in range(n)]
    if all(p.exists() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [np.asarray(getattr(skimage.data, name)()) for name in SOURCES]
    for path in paths:
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = rng.integers(h - ch + 1), rng.integers(w - cw + 1)
        size = (int(1024 * rng.uniform(0.85, 1.15)), int(768 * rng.uniform(0.85, 1.15)))
        if rng.random() < 0.25:
            size = size[::-1]
        image = Image.fromarray(photo[y : y + ch, x : x + cw]).resize(
            size, Image.Resampling.BICUBIC
        )
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image.save(path, quality=int(rng.integers(80, 96)))
    return paths


def partition(paths: list[Path], n_shards: int) -> list[Shard]:
    """Contiguous, nearly equal shards, as the workflow would make them."""
    items = [(p.stem, str(p)) for p in paths]
    return [list(chunk) for chunk in np.array_split(np.array(items, dtype=object), n_shards)]


def plain_loop(shard: Shard, max_side: int, quality: int) -> int:
    """The reference: open, convert to RGB, thumbnail, encode to memory."""
    for _, path in shard:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        rgb.thumbnail((max_side, max_side))
        rgb.save(io.BytesIO(), format="JPEG", quality=quality)
    return len(shard)


def ingest_job(shard: Shard, out_dir: str, params: IngestParams) -> int:
    """One workflow shard job: everything ``ingest_shard`` does, outputs included."""
    name = shard[0][0]
    summary = ingest_shard(shard, f"{out_dir}/{name}.h5", f"{out_dir}/{name}.rejects.csv", params)
    assert summary.n_rejected == 0, summary
    return summary.n_ok


def time_variant(pool: Pool, fn: Callable[..., int], args: list) -> float:
    """Images per second of running ``fn`` on every shard, one shard per process."""
    start = time.perf_counter()
    n = sum(pool.starmap(fn, args))
    return n / (time.perf_counter() - start)


def run(shards: list[Shard], out_dir: Path, params: IngestParams, rounds: int) -> Result:
    """Warm up both variants once, then time them interleaved, alternating which goes first."""
    plain_args = [(s, params.max_side, params.jpeg_quality) for s in shards]
    ingest_args = [(s, str(out_dir), params) for s in shards]
    variants = {"plain": (plain_loop, plain_args), "ingest": (ingest_job, ingest_args)}
    runs: dict[str, list[float]] = {"plain": [], "ingest": []}
    with multiprocessing.get_context("spawn").Pool(len(shards)) as pool:
        for fn, args in variants.values():  # warm-up: imports, page cache
            time_variant(pool, fn, args)
        for i in range(rounds):
            order = ["plain", "ingest"] if i % 2 == 0 else ["ingest", "plain"]
            for name in order:
                runs[name].append(time_variant(pool, *variants[name]))
                print(f"round {i + 1} {name:6s} {runs[name][-1]:8.1f} images/s", flush=True)
    return Result(
        statistics.median(runs["plain"]), statistics.median(runs["ingest"]), *runs.values()
    )


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def section(result: Result, n_images: int, processes: int, rounds: int, command: str) -> str:
    """The markdown section written to results.md."""
    verdict = "meets" if result.ratio >= TARGET_RATIO else "MISSES"
    fmt = ", ".join
    return (
        f"{HEADING}\n\n"
        f"- date: {datetime.date.today().isoformat()}\n"
        f"- machine: {os.cpu_count()} cores ({cpu_name()}), Python {platform.python_version()}, "
        f"Pillow {PIL.__version__}\n"
        f"- images: {n_images} JPEGs of about 1024x768 (crops of scikit-image photos), "
        f"max_side {IngestParams().max_side}\n"
        f"- processes: {processes} (one shard each); {rounds} interleaved rounds after a warm-up, "
        "median reported\n\n"
        "| variant | images/s (median) | rounds |\n|---|---|---|\n"
        f"| plain Pillow loop (open, RGB, thumbnail, JPEG to memory) | {result.plain:.1f} | "
        f"{fmt(f'{x:.1f}' for x in result.plain_runs)} |\n"
        f"| `ingest_shard` (checks, LANCZOS, JPEG, HDF5 + rejects) | {result.ingest:.1f} | "
        f"{fmt(f'{x:.1f}' for x in result.ingest_runs)} |\n\n"
        f"Ratio ingest / plain: **{result.ratio:.2f}x** ({verdict} the {TARGET_RATIO}x target).\n\n"
        f"Command: `{command}`\n"
    )


def write_section(results_md: Path, text: str) -> None:
    replace_section(results_md, HEADING, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "ingest")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.md")
    args = parser.parse_args()

    paths = make_images(args.work / "images", args.images)
    out_dir = args.work / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    result = run(partition(paths, args.processes), out_dir, IngestParams(), args.rounds)

    python = (
        os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else "python"
    )
    command = shlex.join([python, os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    text = section(result, len(paths), args.processes, args.rounds, command)
    print("\n" + text)
    write_section(args.results, text)


if __name__ == "__main__":
    main()
