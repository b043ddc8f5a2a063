"""Build an accuracy benchmark from real pictures shipped in Debian packages (no download).

The demo's sources are tiles of 11 scikit-image photographs; this benchmark draws on a wider,
independent pool that any Debian/Ubuntu machine can install:

- desktop wallpapers (``plasma-workspace-wallpapers``, ``gnome-backgrounds``, ``mate-backgrounds``,
  ``ukui-wallpapers``): for each wallpaper only its largest variant is used (the other sizes,
  portrait crops and dark/light twins are the same picture), cut into non-overlapping square
  tiles on a grid of at most ``--max-tiles`` cells, each resized to ``--tile`` px;
- Tux Paint stamps (``tuxpaint-stamps-default``): the ones at least ``--min-stamp`` px on both
  sides that look photographic (high color entropy), alpha composited on white.

Flat tiles are dropped, and so is every source whose small normalized thumbnail correlates above
``--max-correlation`` (in absolute value, under any of the 8 flips/quarter turns) with a source
kept before it: repeated patterns and recolored twins would otherwise be unlabeled copies of a
reference and make the ground truth ambiguous. Sources are written as PNG to
``benchmarks/work/bench_sources/`` (with ``manifest.csv`` naming each one's origin), then the
project's synthesizer turns them into references, copy and distractor queries, training images
and ground truth in ``benchmarks/work/bench/``. Inputs are read in sorted order and nothing is
random except the synthesizer's seeded draws, so a rerun gives the same files.

    .venv/bin/python benchmarks/make_benchmark_data.py [--references 500] [--queries 300] \\
        [--distractors 200] [--training 200] [--seed 0] [--contact-sheet sheet.png]
"""

from __future__ import annotations

import argparse
import collections
import csv
import logging
import math
import random
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))

from copydetect.synth import SynthesisConfig, synthesize  # noqa: E402

log = logging.getLogger("make_benchmark_data")

WORK = ROOT / "benchmarks" / "work"
APT_COMMAND = (
    "apt-get install -y --no-install-recommends plasma-workspace-wallpapers gnome-backgrounds "
    "mate-backgrounds ukui-wallpapers tuxpaint-stamps-default"
)
RASTER_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # the packages' SVGs have no decoder here
TARGET_SOURCES = 900
# Size and light/dark suffixes of one wallpaper's variants: Elephants_3840x2160, adwaita-d,
# MATE-Stripes-Light all name the same picture as their stem without the suffix.
_VARIANT_SUFFIX = re.compile(r"[-_](\d+x\d+|[ld]|dark|light)$", re.IGNORECASE)


@dataclass(frozen=True)
class Package:
    """Where one Debian package puts its pictures; ``recursive=False``: top-level files only."""

    name: str
    short: str  # prefix of the written file names
    folder: Path
    recursive: bool = True
    stamps: bool = False  # Tux Paint stamps (whole images) rather than wallpapers (tiled)

    def images(self) -> list[Path]:
        """Raster images of the package, sorted; empty when the package is not installed."""
        if not self.folder.is_dir():
            return []
        found = self.folder.rglob("*") if self.recursive else self.folder.glob("*")
        return sorted(p for p in found if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)


PACKAGES = (
    Package("plasma-workspace-wallpapers", "plasma", Path("/usr/share/wallpapers")),
    Package("gnome-backgrounds", "gnome", Path("/usr/share/backgrounds/gnome")),
    Package("mate-backgrounds", "mate", Path("/usr/share/backgrounds/mate")),
    Package("ukui-wallpapers", "ukui", Path("/usr/share/backgrounds"), recursive=False),
    Package("tuxpaint-stamps-default", "tuxpaint", Path("/usr/share/tuxpaint/stamps"), stamps=True),
)


@dataclass(frozen=True)
class Filters:
    """Thresholds of the source selection (see the module docstring)."""

    tile: int = 384  # side of a written tile, px
    max_tiles: int = 20  # grid cells per wallpaper, at most
    min_std: float = 20.0  # grayscale standard deviation below which a tile is flat
    max_correlation: float = 0.9  # thumbnail correlation above which a source is a duplicate
    min_stamp: int = 150  # both sides of a stamp, px
    min_entropy: float = 5.5  # color entropy (bits, 5-bit channels) of a photographic stamp
    max_top_colors: float = 0.2  # share of a stamp's pixels in its 16 most frequent colors
    thumb: int = 16  # side of the duplicate-detection thumbnail


@dataclass
class Tally:
    """What happened to one package's candidates."""

    pictures: int = 0  # wallpapers (largest variants) or stamps looked at
    skipped: int = 0  # too small or not photographic
    flat: int = 0
    duplicates: int = 0
    kept: int = 0


@dataclass
class SourceSet:
    """The written sources with their manifest rows and per-package tallies."""

    paths: list[Path] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)  # file, package, origin, box
    tallies: dict[str, Tally] = field(default_factory=dict)


# --- Packages and wallpaper variants ---


def missing_packages(packages: Sequence[Package] = PACKAGES) -> list[str]:
    """Names of the packages whose folder is absent or holds no raster image."""
    return [p.name for p in packages if not p.images()]


def variant_key(path: Path, package: Package) -> str:
    """The picture a file is a variant of: the theme folder for KDE's ``contents/images``
    layout, else the folder plus the stem without its size or light/dark suffix."""
    rel = path.relative_to(package.folder)
    if "contents" in rel.parts:
        return rel.parts[0]
    return (rel.parent / _VARIANT_SUFFIX.sub("", path.stem)).as_posix()


def is_wallpaper_file(path: Path) -> bool:
    """Screenshots are previews, ``images_dark`` a recolored twin of ``images``: both skipped."""
    return path.stem.lower() != "screenshot" and "images_dark" not in path.parts


def pixel_area(path: Path) -> int:
    """Width × height from the header (several KDE sizes are symlinks to the largest file)."""
    with Image.open(path) as im:
        return im.width * im.height


def largest_variants(package: Package) -> dict[str, Path]:
    """Variant key -> the variant with the most pixels (ties: the first in sorted order)."""
    groups: dict[str, list[Path]] = collections.defaultdict(list)
    for path in package.images():
        if is_wallpaper_file(path):
            groups[variant_key(path, package)].append(path.resolve())
    return {key: max(sorted(set(paths)), key=pixel_area) for key, paths in sorted(groups.items())}


# --- Pixels ---


def rgb_on_white(img: Image.Image) -> Image.Image:
    """RGB with any transparency composited on white (``convert("RGB")`` would keep whatever
    color the transparent pixels happen to store, often black)."""
    rgba = img.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


Cell = tuple[int, int, tuple[int, int, int, int]]  # row, column, box (left, top, right, bottom)


def grid_cells(width: int, height: int, tile: int, max_tiles: int) -> list[Cell]:
    """A centered grid of square cells, row by row: the smallest cell side >= ``tile`` that
    gives at most ``max_tiles`` cells. Empty when the image is smaller than one tile."""
    side = tile
    while (width // side) * (height // side) > max_tiles:
        side += 1
    rows, cols = height // side, width // side
    x0, y0 = (width - cols * side) // 2, (height - rows * side) // 2
    return [
        (r, c, (x0 + c * side, y0 + r * side, x0 + (c + 1) * side, y0 + (r + 1) * side))
        for r in range(rows)
        for c in range(cols)
    ]


def gray_std(img: Image.Image) -> float:
    return float(np.asarray(img.convert("L"), dtype=np.float32).std())


def color_stats(img: Image.Image) -> tuple[float, float]:
    """Color entropy (bits, 5-bit channels) of the opaque pixels, and the share of them painted
    in the 16 most frequent exact colors. Clipart and letters fill areas with a few flat colors
    (low entropy or a large share); photographs spread over thousands of colors."""
    rgba = np.asarray(img.convert("RGBA"))
    pixels = rgba[rgba[..., 3] > 128][:, :3].astype(np.int64)
    if len(pixels) == 0:
        return 0.0, 1.0
    exact = (pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2]
    _, counts = np.unique(exact, return_counts=True)
    top_share = float(np.sort(counts)[::-1][:16].sum() / len(exact))
    coarse = pixels >> 3
    _, counts = np.unique(
        (coarse[:, 0] << 10) | (coarse[:, 1] << 5) | coarse[:, 2], return_counts=True
    )
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum()), top_share


def is_photographic(img: Image.Image, filters: Filters) -> bool:
    entropy, top_share = color_stats(img)
    return entropy >= filters.min_entropy and top_share <= filters.max_top_colors


def thumbnail_variants(img: Image.Image, side: int) -> np.ndarray:
    """Zero-mean, unit-norm grayscale thumbnails under the 8 flips and quarter turns, [8, side²]."""
    base = np.asarray(img.convert("L").resize((side, side), Image.Resampling.BOX), np.float32)
    variants = []
    for k in range(4):
        turned = np.rot90(base, k)
        variants += [turned, turned[:, ::-1]]
    flat = np.stack([v.ravel() for v in variants])
    flat -= flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.maximum(norms, 1e-6)


class DuplicateFilter:
    """Remembers the thumbnails of kept sources; a new source whose thumbnail correlates above
    the threshold with any of them (absolute value: an inverted twin also counts) is refused."""

    def __init__(self, max_correlation: float, side: int) -> None:
        self.max_correlation = max_correlation
        self.side = side
        self._kept: list[np.ndarray] = []

    def admit(self, img: Image.Image) -> bool:
        """True (and remembered) when ``img`` is no near-duplicate of a kept source."""
        variants = thumbnail_variants(img, self.side)
        if self._kept:
            kept = np.stack(self._kept)
            if float(np.abs(kept @ variants.T).max()) > self.max_correlation:
                return False
        self._kept.append(variants[0])
        return True


def fit_max_side(img: Image.Image, max_side: int) -> Image.Image:
    """Downscale (never upscale) so that the longest side is at most ``max_side``."""
    if max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def slug(text: str) -> str:
    """A file-name-safe form of a variant key or stamp path."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", text).strip("_")


# --- Candidates of each package ---


@dataclass(frozen=True)
class Candidate:
    """A would-be source: its file stem, where it comes from and its pixels."""

    name: str
    origin: Path
    box: tuple[int, int, int, int] | None  # the tile's box in the original; None: whole stamp
    image: Image.Image


def wallpaper_tiles(package: Package, filters: Filters, tally: Tally) -> Iterator[Candidate]:
    """Grid tiles of each wallpaper's largest variant, flat tiles dropped (counted in ``tally``)."""
    for key, path in largest_variants(package).items():
        with Image.open(path) as im:
            cells = grid_cells(im.width, im.height, filters.tile, filters.max_tiles)
            if not cells:
                tally.skipped += 1
                continue
            picture = rgb_on_white(im)
        tally.pictures += 1
        for row, col, box in cells:
            tile = picture.resize((filters.tile, filters.tile), Image.Resampling.LANCZOS, box=box)
            if gray_std(tile) < filters.min_std:
                tally.flat += 1
                continue
            yield Candidate(f"{package.short}__{slug(key)}_r{row}c{col}", path, box, tile)


def photographic_stamps(package: Package, filters: Filters, tally: Tally) -> Iterator[Candidate]:
    """Stamps large enough and colorful enough to be photographs, on white, fitted to a tile."""
    for path in package.images():
        tally.pictures += 1
        with Image.open(path) as im:
            if min(im.size) < filters.min_stamp or not is_photographic(im, filters):
                tally.skipped += 1
                continue
            stamp = fit_max_side(rgb_on_white(im), filters.tile)
        if gray_std(stamp) < filters.min_std:
            tally.flat += 1
            continue
        stem = slug(path.relative_to(package.folder).with_suffix("").as_posix())
        yield Candidate(f"{package.short}__{stem}", path, None, stamp)


def collect_sources(out_dir: Path, filters: Filters) -> SourceSet:
    """Write every kept source of every package as ``out_dir/{name}.png`` (the folder is
    emptied first, so a stricter filter never leaves stale files) plus ``manifest.csv``."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    dedup = DuplicateFilter(filters.max_correlation, filters.thumb)
    sources = SourceSet()
    for package in PACKAGES:
        tally = sources.tallies.setdefault(package.name, Tally())
        make = photographic_stamps if package.stamps else wallpaper_tiles
        for cand in make(package, filters, tally):
            if not dedup.admit(cand.image):
                tally.duplicates += 1
                continue
            path = out_dir / f"{cand.name}.png"
            cand.image.save(path, format="PNG")
            sources.paths.append(path)
            box = " ".join(map(str, cand.box)) if cand.box else ""
            sources.rows.append([path.name, package.name, str(cand.origin), box])
            tally.kept += 1
        log.info("%s: %s", package.name, tally)
    with (out_dir / "manifest.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "package", "origin", "box"])
        writer.writerows(sources.rows)
    return sources


# --- Reporting ---


def print_tallies(sources: SourceSet) -> None:
    """One line per package: pictures looked at, skipped, flat, duplicate and kept sources."""
    print(f"{'package':<30} {'pictures':>8} {'skipped':>7} {'flat':>5} {'dups':>5} {'kept':>5}")
    for name, t in sources.tallies.items():
        print(
            f"{name:<30} {t.pictures:>8} {t.skipped:>7} {t.flat:>5} {t.duplicates:>5} {t.kept:>5}"
        )
    print(f"{'total':<30} {'':>8} {'':>7} {'':>5} {'':>5} {len(sources.paths):>5}")


def contact_sheet(paths: Sequence[Path], out: Path, n: int = 40, seed: int = 0) -> None:
    """A grid of ``n`` sources drawn with a fixed seed (8 per row, 128 px cells), for eyeballing."""
    picked = random.Random(seed).sample(sorted(paths), min(n, len(paths)))
    cell, per_row = 128, 8
    rows = math.ceil(len(picked) / per_row)
    sheet = Image.new("RGB", (per_row * cell, rows * cell), (40, 40, 40))
    for i, path in enumerate(picked):
        with Image.open(path) as im:
            thumb = im.convert("RGB")
            thumb.thumbnail((cell - 4, cell - 4))
        sheet.paste(thumb, ((i % per_row) * cell + 2, (i // per_row) * cell + 2))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"contact sheet of {len(picked)} sources: {out}")


# --- Command line ---


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources-dir", type=Path, default=WORK / "bench_sources")
    parser.add_argument("--out", type=Path, default=WORK / "bench", help="benchmark folder")
    parser.add_argument("--references", type=int, default=500)
    parser.add_argument("--queries", type=int, default=300, help="edited-copy queries")
    parser.add_argument("--distractors", type=int, default=200)
    parser.add_argument("--training", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-side", type=int, default=512, help="of the written images")
    defaults = Filters()
    parser.add_argument("--tile", type=int, default=defaults.tile, help="tile side, px")
    parser.add_argument("--max-tiles", type=int, default=defaults.max_tiles)
    parser.add_argument("--min-std", type=float, default=defaults.min_std)
    parser.add_argument("--max-correlation", type=float, default=defaults.max_correlation)
    parser.add_argument("--min-stamp", type=int, default=defaults.min_stamp)
    parser.add_argument("--min-entropy", type=float, default=defaults.min_entropy)
    parser.add_argument("--max-top-colors", type=float, default=defaults.max_top_colors)
    parser.add_argument("--contact-sheet", type=Path, help="also write a PNG of 40 sources")
    parser.add_argument("--sources-only", action="store_true", help="skip the synthesizer")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Check the packages, collect the sources, synthesize the benchmark; exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    missing = missing_packages()
    if missing:
        print(
            f"missing picture packages: {', '.join(missing)}\ninstall them with:\n  {APT_COMMAND}",
            file=sys.stderr,
        )
        return 1
    filters = Filters(
        tile=args.tile,
        max_tiles=args.max_tiles,
        min_std=args.min_std,
        max_correlation=args.max_correlation,
        min_stamp=args.min_stamp,
        min_entropy=args.min_entropy,
        max_top_colors=args.max_top_colors,
    )
    sources = collect_sources(args.sources_dir, filters)
    print_tallies(sources)
    if args.contact_sheet:
        contact_sheet(sources.paths, args.contact_sheet)
    if len(sources.paths) < TARGET_SOURCES:
        log.warning(
            "only %d sources (target %d): lower --tile or raise --max-tiles",
            len(sources.paths),
            TARGET_SOURCES,
        )
    if args.sources_only:
        return 0
    cfg = SynthesisConfig(
        n_references=args.references,
        n_copy_queries=args.queries,
        n_distractors=args.distractors,
        n_training=args.training,
        seed=args.seed,
        max_side=args.max_side,
    )
    try:
        summary = synthesize(sources.paths, args.out, cfg)
    except ValueError as exc:  # too few sources for the requested counts
        print(f"{exc}\nlower --tile or raise --max-tiles for more tiles", file=sys.stderr)
        return 2
    print(f"benchmark in {args.out}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
