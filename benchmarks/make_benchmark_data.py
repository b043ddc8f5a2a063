"""Build an accuracy benchmark from real pictures shipped in Debian packages (no download).

The demo's sources are tiles of 11 scikit-image photographs; this benchmark draws on a wider,
independent pool that any Debian/Ubuntu machine can install:

- desktop wallpapers (``plasma-workspace-wallpapers``, ``gnome-backgrounds``, ``mate-backgrounds``,
  ``ukui-wallpapers``): for each wallpaper only its largest variant is used (the other sizes,
  portrait crops and dark/light twins are the same picture), cut into non-overlapping square
  tiles on a grid of at most ``--max-tiles`` cells, each resized to ``--tile`` px;
- Tux Paint stamps (``tuxpaint-stamps-default``): the ones at least ``--min-stamp`` px on both
  sides that look photographic (high color entropy, no 16 colors covering most of the stamp),
  alpha composited on white and fitted to ``--tile`` px.

Flat tiles (grayscale std below ``--min-std``) are dropped, and so are near-duplicates, which
would be unlabeled copies of a reference and make the ground truth ambiguous:

- a source whose 16×16 zero-mean grayscale thumbnail correlates above ``--max-correlation``
  (absolute value, under any of the 8 flips and quarter turns) with a source kept before it:
  recolored twins, mirrored stamps, identical stamps filed twice;
- a tile whose central quarter's fine structure (high-pass) reappears anywhere in a kept tile
  of the same wallpaper (normalized cross-correlation above ``--max-shared``): the tiles of a
  repeated pattern (GNOME's dot grids, hexagons, truchet curves) are shifted copies.

What remains is varied but not independent: tiles of one wallpaper share its palette and style
(up to ~60 from a big textured photo), so they are harder negatives than unrelated photos.

Sources are written as PNG to ``benchmarks/work/bench_sources/`` (with ``manifest.csv`` naming
each one's package, file and box), then the project's synthesizer turns them into references,
copy and distractor queries, training images and ground truth in ``benchmarks/work/bench/``.
Inputs are read in sorted order and the only randomness is the synthesizer's seeded draws, so a
rerun gives the same files.

    .venv/bin/python benchmarks/make_benchmark_data.py [--references 500] [--queries 300] \\
        [--distractors 200] [--training 200] [--seed 0] [--contact-sheet sheet.png]
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import logging
import math
import random
import re
import shlex
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from graphic_sources import load_graphic, text_pages, unique_files  # noqa: E402
from PIL import Image

from copydetect.synth import EDIT_SETS, SynthesisConfig, fit_max_side, synthesize

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("make_benchmark_data")

WORK = ROOT / "benchmarks" / "work"
APT_PACKAGES = (
    "plasma-workspace-wallpapers",
    "gnome-backgrounds",
    "mate-backgrounds",
    "ukui-wallpapers",
    "tuxpaint-stamps-default",
)
RASTER_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # wallpapers and photo stamps: raster only
GRAPHIC_SUFFIXES = (*RASTER_SUFFIXES, ".svg", ".gif")  # graphics: SVG through rsvg-convert
# --graphics: the packages of the non-photographic sources (graphic_sources.py), the fonts of the
# text pages and of the disc21 edits (text in several scripts, emoji), and the SVG rasterizer.
GRAPHICS_APT = (
    "oxygen-icon-theme",
    "tango-icon-theme",
    "tuxpaint-data",
    "octave-doc",
    "fonts-dejavu-core",
    "fonts-dejavu-extra",
    "fonts-noto-core",
    "fonts-noto-color-emoji",
    "librsvg2-bin",
)
TARGET_SOURCES = 900
MIN_DETAIL_STD = 2.0  # gray levels: a tile center with less fine structure is not compared
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
    kind: str = "wallpaper"  # what the sources look like, reported per kind
    graphic: bool = False  # whole non-photographic images, SVG too (see graphic_sources.py)
    skip: tuple[str, ...] = ()  # graphics: leave out paths containing one of these

    @property
    def label(self) -> str:
        """The name in tallies and records; Tux Paint's stamps serve two kinds."""
        return f"{self.name} ({self.kind})" if self.graphic and self.stamps else self.name

    def graphics(self) -> list[Path]:
        """Raster and SVG files of a graphics package (aliases once), sorted; of a picture
        shipped both as SVG and as raster (Tux Paint's stamps), the SVG only."""
        files = unique_files(self.folder, GRAPHIC_SUFFIXES, self.skip)
        svgs = {p.with_suffix("") for p in files if p.suffix.lower() == ".svg"}
        return [p for p in files if p.suffix.lower() == ".svg" or p.with_suffix("") not in svgs]

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
    Package(
        "tuxpaint-stamps-default",
        "tuxpaint",
        Path("/usr/share/tuxpaint/stamps"),
        stamps=True,
        kind="photo stamp",
    ),
)
# Sources unlike photographs (--graphics), after the photographic ones so that those are kept
# as before; file-type icons are left out (one page shape with a small emblem, hundreds of times).
GRAPHIC_PACKAGES = (
    Package(
        "tuxpaint-stamps-default",
        "clipart",
        Path("/usr/share/tuxpaint/stamps"),
        stamps=True,
        kind="clip art",
        graphic=True,
    ),
    Package(
        "oxygen-icon-theme",
        "oxygen",
        Path("/usr/share/icons/oxygen/base/256x256"),
        kind="icon",
        graphic=True,
        skip=("/mimetypes/",),
    ),
    Package(
        "tango-icon-theme",
        "tango",
        Path("/usr/share/icons/Tango/scalable"),
        kind="icon",
        graphic=True,
        skip=("/mimetypes/",),
    ),
    Package(
        "tuxpaint-data",
        "starter",
        Path("/usr/share/tuxpaint/starters"),
        kind="line drawing",
        graphic=True,
        skip=("-back.",),  # a starter's colored background layer, not its drawing
    ),
    Package(
        "octave-doc",
        "octave",
        Path("/usr/share/doc/octave/octave.html"),
        recursive=False,
        kind="figure",
        graphic=True,
    ),
)
TEXT_PACKAGE = Package("fonts-noto-core", "text", Path("/usr/share/fonts"), kind="text page")


@dataclass(frozen=True)
class Filters:
    """Thresholds of the source selection (see the module docstring)."""

    # 384 px tiles, <= 20 per wallpaper and std >= 20 gave only ~600 sources (most of these
    # wallpapers are smooth vector art): 320 px, <= 80 cells and std >= 18 give ~940.
    tile: int = 320  # side of a written tile, px
    max_tiles: int = 80  # grid cells per wallpaper, at most
    min_std: float = 18.0  # grayscale standard deviation below which a tile is flat
    max_correlation: float = 0.9  # thumbnail correlation above which a source is a duplicate
    min_stamp: int = 150  # both sides of a stamp, px
    min_graphic: int = 96  # both sides of a raster graphic (icon, clip art, drawing), px
    text_pages: int = 200  # text pages typeset (--graphics)
    min_entropy: float = 5.5  # color entropy (bits, 5-bit channels) of a photographic stamp
    max_top_colors: float = 0.2  # share of a stamp's pixels in its 16 most frequent colors
    thumb: int = 16  # side of the duplicate-detection thumbnail
    max_shared: float = 0.6  # detail NCC above which a tile repeats another of its picture
    probe: int = 128  # side at which tiles of one picture are compared for shared content


@dataclass
class Tally:
    """What happened to one package's candidates."""

    pictures: int = 0  # wallpapers (largest variants) or stamps looked at
    skipped: int = 0  # too small or not photographic
    flat: int = 0
    duplicates: int = 0  # near-duplicate thumbnail of a kept source
    patterns: int = 0  # content shared with a kept tile of the same picture
    kept: int = 0


@dataclass
class SourceSet:
    """The written sources with their manifest rows and per-package tallies."""

    paths: list[Path] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)  # file, package, origin, box, kind, group
    groups: dict[Path, str] = field(default_factory=dict)  # written path -> content group
    tallies: dict[str, Tally] = field(default_factory=dict)


# --- Packages and wallpaper variants ---


def missing_packages(packages: Sequence[Package] = PACKAGES) -> list[str]:
    """Names of the packages whose folder is absent or holds no image (the text pages: no
    DejaVu or Noto font)."""
    return [p.name for p in packages if not has_pictures(p)]


def has_pictures(package: Package) -> bool:
    if package is TEXT_PACKAGE:
        return next(text_pages(1, 64), None) is not None
    return bool(package.graphics() if package.graphic else package.images())


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


def dihedral(a: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and quarter turns of a 2-D array (contiguous copies)."""
    turns = [np.rot90(a, k) for k in range(4)]
    return [np.ascontiguousarray(v) for t in turns for v in (t, t[:, ::-1])]


def thumbnail_variants(img: Image.Image, side: int) -> np.ndarray:
    """Zero-mean, unit-norm grayscale thumbnails under the 8 flips and quarter turns, [8, side²]."""
    base = np.asarray(img.convert("L").resize((side, side), Image.Resampling.BOX), np.float32)
    flat = np.stack([v.ravel() for v in dihedral(base)])
    flat -= flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.maximum(norms, 1e-6)


def detail(img: Image.Image, side: int) -> np.ndarray:
    """Grayscale at ``side`` px minus its Gaussian blur (sigma 2 px): the fine structure only,
    so that smooth shading (sky, bokeh, gradients) cannot make two tiles look alike."""
    gray = np.asarray(img.convert("L").resize((side, side), Image.Resampling.BOX), np.float32)
    return gray - cv2.GaussianBlur(gray, (0, 0), 2.0)


def shared_content(probe: np.ndarray, others: Sequence[np.ndarray], min_std: float) -> float:
    """Best normalized cross-correlation of ``probe``'s central quarter (under the 8 flips and
    turns) at any position inside any of ``others``: high when the two show the same content
    shifted, as the tiles of a repeated pattern do. 0.0 for a center without detail."""
    h, w = probe.shape
    center = probe[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2]
    if not others or float(center.std()) < min_std:
        return 0.0
    best = 0.0
    for template in dihedral(center):
        for other in others:
            scores = cv2.matchTemplate(other, template, cv2.TM_CCOEFF_NORMED)
            best = max(best, float(np.nan_to_num(scores, nan=0.0).max()))
    return best


class DuplicateFilter:
    """Refuses near-duplicates of the sources kept so far, in two ways:

    - a thumbnail correlating above ``max_correlation`` with any kept one, in absolute value
      (an inverted twin counts) and under flips and quarter turns: twins across pictures;
    - a tile whose central quarter's fine structure reappears (NCC above ``max_shared``)
      anywhere in a kept tile of the same picture: repeated patterns, whose tiles are shifted
      copies of each other (and whose local features would match across tiles).
    """

    def __init__(self, filters: Filters) -> None:
        self.filters = filters
        self._thumbs: list[np.ndarray] = []
        self._probes: dict[str, list[np.ndarray]] = collections.defaultdict(list)

    def check(self, img: Image.Image, picture: str) -> str:
        """ "" when ``img`` is admitted (and remembered), else why not: "duplicate", "pattern"."""
        f = self.filters
        variants = thumbnail_variants(img, f.thumb)
        if self._thumbs and float(np.abs(np.stack(self._thumbs) @ variants.T).max()) > (
            f.max_correlation
        ):
            return "duplicate"
        probe = detail(img, f.probe)
        if shared_content(probe, self._probes[picture], MIN_DETAIL_STD) > f.max_shared:
            return "pattern"
        self._thumbs.append(variants[0])
        self._probes[picture].append(probe)
        return ""


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


def photographic_twin(svg: Path, filters: Filters) -> bool:
    """Whether an SVG stamp's raster twin (same stem) passes the photographic filter, i.e. is
    already a source of the photographic stamps."""
    if svg.suffix.lower() != ".svg":
        return False
    for suffix in RASTER_SUFFIXES:
        twin = svg.with_suffix(suffix)
        if twin.is_file():
            with Image.open(twin) as im:
                return min(im.size) >= filters.min_stamp and is_photographic(im, filters)
    return False


def graphics(package: Package, filters: Filters, tally: Tally) -> Iterator[Candidate]:
    """Whole non-photographic images (clip-art stamps: only those the photographic filter
    refuses), on white, fitted to a tile; small rasters and flat images counted and dropped."""
    for path in package.graphics():
        tally.pictures += 1
        if package.stamps and photographic_twin(path, filters):
            tally.skipped += 1  # the photographic stamps have its raster version
            continue
        if path.suffix.lower() != ".svg":
            with Image.open(path) as im:
                small = min(im.size) < filters.min_graphic
                if small or (package.stamps and is_photographic(im, filters)):
                    tally.skipped += 1
                    continue
        image = load_graphic(path, filters.tile, rgb_on_white)
        if image is None:
            tally.skipped += 1
            continue
        if gray_std(image) < filters.min_std:
            tally.flat += 1
            continue
        # The suffix stays in the name: a stamp may ship as both star.png and star.svg.
        stem = slug(path.relative_to(package.folder.resolve()).as_posix())
        yield Candidate(f"{package.short}__{stem}", path, None, image)


def typeset_pages(package: Package, filters: Filters, tally: Tally) -> Iterator[Candidate]:
    """Seeded text pages (graphic_sources.text_pages) as candidates."""
    for name, description, page in text_pages(filters.text_pages, filters.tile):
        tally.pictures += 1
        yield Candidate(f"{package.short}__{name}", Path(description), None, page)


def content_group(cand: Candidate, package: Package) -> str:
    """Sources that may share content, dealt to one role together (``synth.split_sources``):
    the tiles of one wallpaper (a repeating pattern passes the pattern filter when its period
    exceeds a tile); of icons, clip art and stamps, those of one folder whose names begin with
    the same word (``document-save`` and ``document-save-as``, the ASL hand-sign letters, a
    cartoon apple and its core: drawn from shared parts). Each text page stands alone."""
    if package is TEXT_PACKAGE:
        return f"{package.short}:{cand.name}"
    if cand.box is not None:
        return f"{package.short}:{cand.origin}"
    first_word = re.split(r"[-_.\s]+", cand.origin.stem.lower())[0]
    return f"{package.short}:{cand.origin.parent}:{first_word}"


def candidates(package: Package, filters: Filters, tally: Tally) -> Iterator[Candidate]:
    """The would-be sources of one package, by its kind."""
    if package is TEXT_PACKAGE:
        return typeset_pages(package, filters, tally)
    if package.graphic:
        return graphics(package, filters, tally)
    if package.stamps:
        return photographic_stamps(package, filters, tally)
    return wallpaper_tiles(package, filters, tally)


def collect_sources(
    out_dir: Path, filters: Filters, packages: Sequence[Package] = PACKAGES
) -> SourceSet:
    """Write every kept source of every package as ``out_dir/{name}.png`` (the folder is
    emptied first, so a stricter filter never leaves stale files) plus ``manifest.csv``."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    dedup = DuplicateFilter(filters)
    sources = SourceSet()
    for package in packages:
        tally = sources.tallies.setdefault(package.label, Tally())
        for cand in candidates(package, filters, tally):
            refused = dedup.check(cand.image, str(cand.origin))
            if refused:
                setattr(tally, f"{refused}s", getattr(tally, f"{refused}s") + 1)
                continue
            path = out_dir / f"{cand.name}.png"
            if path.exists():  # two sources under one name would make one file of two images
                raise ValueError(f"two sources named {path.name}: {cand.origin}")
            cand.image.save(path, format="PNG")
            sources.paths.append(path)
            box = " ".join(map(str, cand.box)) if cand.box else ""
            group = content_group(cand, package)
            sources.groups[path] = group
            sources.rows.append(
                [path.name, package.label, str(cand.origin), box, package.kind, group]
            )
            tally.kept += 1
        log.info("%s: %s", package.label, tally)
    with (out_dir / "manifest.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "package", "origin", "box", "kind", "group"])
        writer.writerows(sources.rows)
    return sources


# --- Reporting ---


def print_tallies(sources: SourceSet) -> None:
    """One line per package: pictures looked at, skipped, flat, duplicate and kept sources."""
    print(f"{'package':<28} pictures skipped  flat  dups  patterns  kept")
    for name, t in sources.tallies.items():
        print(
            f"{name:<28} {t.pictures:>8} {t.skipped:>7} {t.flat:>5} {t.duplicates:>5} "
            f"{t.patterns:>9} {t.kept:>5}"
        )
    print(f"{'total':<28} {'':>8} {'':>7} {'':>5} {'':>5} {'':>9} {len(sources.paths):>5}")


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


def used_by_package(bench: Path, sources: SourceSet) -> dict[str, dict[str, int]]:
    """Package -> role (reference, distractor, training, background) -> sources used, read from
    the synthesizer's ``sources.csv`` (which names each source by its file name)."""
    package_of = {row[0]: row[1] for row in sources.rows}
    used: dict[str, dict[str, int]] = {name: {} for name in sources.tallies}
    with (bench / "sources.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            roles = used[package_of[Path(row["source"]).name]]
            roles[row["role"]] = roles.get(row["role"], 0) + 1
    return used


def write_build_record(
    bench: Path,
    sources: SourceSet,
    filters: Filters,
    argv: Sequence[str] | None,
    edit_set: str = "default",
) -> dict:
    """Write ``bench/build.json``: the command, the filters, the sources kept and used per
    package (``benchmarks/accuracy.py`` reports it). The synthesizer leaves other files alone."""
    args = list(sys.argv[1:] if argv is None else argv)
    record = {
        "command": shlex.join([".venv/bin/python", "benchmarks/make_benchmark_data.py", *args]),
        "edit_set": edit_set,
        # file-name prefix (before "__") -> kind of source, for per-kind tables
        "kinds": {row[0].split("__")[0]: row[4] for row in sources.rows},
        "filters": asdict(filters),
        "kept": {name: tally.kept for name, tally in sources.tallies.items()},
        "used": used_by_package(bench, sources),
    }
    (bench / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


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
    parser.add_argument("--max-shared", type=float, default=defaults.max_shared)
    parser.add_argument("--min-stamp", type=int, default=defaults.min_stamp)
    parser.add_argument("--min-entropy", type=float, default=defaults.min_entropy)
    parser.add_argument("--max-top-colors", type=float, default=defaults.max_top_colors)
    parser.add_argument("--min-graphic", type=int, default=defaults.min_graphic)
    parser.add_argument("--text-pages", type=int, default=defaults.text_pages)
    parser.add_argument(
        "--graphics",
        action="store_true",
        help="add sources unlike photographs: clip art, icons, line drawings, figures, text pages",
    )
    parser.add_argument(
        "--edit-set", choices=sorted(EDIT_SETS), default="default", help="the synthesizer's edits"
    )
    parser.add_argument("--contact-sheet", type=Path, help="also write a PNG of 40 sources")
    parser.add_argument(
        "--apt-packages", action="store_true", help="print the Debian packages needed and exit"
    )
    parser.add_argument("--sources-only", action="store_true", help="skip the synthesizer")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Check the packages, collect the sources, synthesize the benchmark; exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    apt = [*APT_PACKAGES, *(GRAPHICS_APT if args.graphics else ())]
    if args.apt_packages:
        print(" ".join(apt))
        return 0
    packages = [*PACKAGES, *GRAPHIC_PACKAGES, TEXT_PACKAGE] if args.graphics else list(PACKAGES)
    missing = missing_packages(packages)
    if missing:
        command = "apt-get install -y --no-install-recommends " + " ".join(apt)
        print(
            f"missing picture packages: {', '.join(missing)}\ninstall them with:\n  {command}"
            "\n(or: make benchmark-data)",
            file=sys.stderr,
        )
        return 1
    filters = Filters(
        tile=args.tile,
        max_tiles=args.max_tiles,
        min_std=args.min_std,
        max_correlation=args.max_correlation,
        max_shared=args.max_shared,
        min_stamp=args.min_stamp,
        min_entropy=args.min_entropy,
        max_top_colors=args.max_top_colors,
        min_graphic=args.min_graphic,
        text_pages=args.text_pages,
    )
    sources = collect_sources(args.sources_dir, filters, packages)
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
        edit_set=args.edit_set,
    )
    try:
        summary = synthesize(sources.paths, args.out, cfg, sources.groups)
    except ValueError as exc:  # too few sources for the requested counts
        print(f"{exc}\nlower --tile or raise --max-tiles for more tiles", file=sys.stderr)
        return 2
    record = write_build_record(args.out, sources, filters, argv, args.edit_set)
    print(f"benchmark in {args.out}: {summary}")
    print(f"sources used, by package and role: {json.dumps(record['used'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
