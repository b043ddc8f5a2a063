"""Sources unlike photographs for the harder benchmark (``make_benchmark_data.py --graphics``).

All of them come from Debian packages, read offline and in sorted order:

- clip art: Tux Paint stamps that are *not* photographic (few flat colors), raster or SVG;
- icons: the Oxygen (256 px PNG) and Tango (SVG) icon themes, without the file-type icons
  (hundreds of one page shape with a small emblem: near-duplicates of each other);
- line drawings: Tux Paint's coloring-book starters (outlines, not their colored backgrounds);
- figures: the plots of Octave's manual (``octave-doc``);
- text pages: paragraphs of the license texts in ``/usr/share/common-licenses`` and phrases in
  other scripts, typeset with the DejaVu and Noto fonts (``fonts-dejavu-*``, ``fonts-noto-core``).

SVGs are rasterized with ``rsvg-convert`` (``librsvg2-bin``); without it they are skipped.
No image comes from the openclipart, gcompris or wesnoth packages, so that a benchmark built from
those stays independent of this one.
"""

from __future__ import annotations

import io
import itertools
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, features

from copydetect.synth import SCRIPTS, find_font, fit_max_side

SVG_RENDERER = "rsvg-convert"
LICENSES = Path("/usr/share/common-licenses")
# Fonts a text page may be set in, by script (file names, looked up under /usr/share/fonts).
PAGE_FONTS: dict[str, tuple[str, ...]] = {
    "latin": (
        "DejaVuSans.ttf",
        "DejaVuSerif.ttf",
        "DejaVuSansMono.ttf",
        "NotoSans-Regular.ttf",
        "NotoSerif-Regular.ttf",
        "NotoSans-Bold.ttf",
    ),
    **{script: fonts for script, (_, fonts) in SCRIPTS.items() if script != "latin"},
}
# Letters of each non-Latin script from which pseudo-words are drawn (Unicode block ranges).
SCRIPT_LETTERS: dict[str, tuple[int, int]] = {
    "cyrillic": (0x0430, 0x044F),
    "greek": (0x03B1, 0x03C9),
    "arabic": (0x0627, 0x064A),
    "hebrew": (0x05D0, 0x05EA),
    "devanagari": (0x0915, 0x0939),
    "thai": (0x0E01, 0x0E2E),
}


def render_svg(path: Path, side: int) -> Image.Image | None:
    """Rasterize an SVG to fit ``side`` px on a white background; ``None`` when rsvg-convert is
    absent or fails on the file."""
    if shutil.which(SVG_RENDERER) is None:
        return None
    command = [SVG_RENDERER, "-a", "-w", str(side), "-h", str(side), "-b", "white", str(path)]
    done = subprocess.run(command, capture_output=True, check=False, timeout=60)
    if done.returncode != 0 or not done.stdout:
        return None
    with Image.open(io.BytesIO(done.stdout)) as im:
        return im.convert("RGB")


def unique_files(folder: Path, suffixes: tuple[str, ...], skip: tuple[str, ...]) -> list[Path]:
    """Files under ``folder`` with one of ``suffixes``, resolved (icon themes alias one file
    under many names), none whose path contains a ``skip`` part, sorted."""
    if not folder.is_dir():
        return []
    found = set()
    for path in folder.rglob("*"):
        if path.suffix.lower() in suffixes and not any(s in path.as_posix() for s in skip):
            real = path.resolve()
            if real.is_file():
                found.add(real)
    return sorted(found)


def load_graphic(
    path: Path, side: int, on_white: Callable[[Image.Image], Image.Image]
) -> Image.Image | None:
    """A raster file composited on white and fitted to ``side`` px, or a rendered SVG."""
    if path.suffix.lower() == ".svg":
        return render_svg(path, side)
    try:
        with Image.open(path) as im:
            return fit_max_side(on_white(im), side)
    except (OSError, ValueError) as exc:
        print(f"skipping unreadable {path}: {exc}")
        return None


# --- Text pages ---


def license_paragraphs(min_chars: int = 200) -> list[str]:
    """Paragraphs of Debian's license texts (sorted files, symlinks once), long ones only."""
    seen, paragraphs = set(), []
    for path in sorted(LICENSES.glob("*")) if LICENSES.is_dir() else []:
        real = path.resolve()
        if real in seen or not real.is_file():
            continue
        seen.add(real)
        for block in real.read_text(errors="replace").split("\n\n"):
            text = " ".join(block.split())
            if len(text) >= min_chars and text not in paragraphs:  # GPL variants repeat some
                paragraphs.append(text)
    return paragraphs


def pseudo_text(rng: random.Random, script: str, n_words: int) -> str:
    """Words of 2–8 random letters of a non-Latin script. No fixed phrase is mixed in: two
    pages in one font that shared words would be unlabeled partial copies."""
    low, high = SCRIPT_LETTERS[script]
    return " ".join(
        "".join(chr(rng.randint(low, high)) for _ in range(rng.randint(2, 8)))
        for _ in range(n_words)
    )


def wrap(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: int
) -> list[str]:
    """Greedy word wrap of ``text`` to lines at most ``width`` px long."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return [*lines, line] if line else lines


def text_page(rng: random.Random, paragraphs: Iterator[str], side: int) -> tuple[Image.Image, str]:
    """One page: a heading and a wrapped body in one font and script, on a plain background;
    a Latin page takes the next three of ``paragraphs``. Returns the image and a description
    (script, font)."""
    script = "latin" if rng.random() < 0.5 else rng.choice(sorted(SCRIPT_LETTERS))
    font_path = find_font([rng.choice(PAGE_FONTS[script]), *PAGE_FONTS[script]])
    if font_path is None:  # no font for this script: Latin in the first installed Latin font
        script, font_path = "latin", find_font(PAGE_FONTS["latin"])
    if font_path is None:
        raise FileNotFoundError("no DejaVu or Noto font under /usr/share/fonts")
    size = rng.randint(11, 24)
    font = ImageFont.truetype(str(font_path), size)
    heading = ImageFont.truetype(str(font_path), round(size * rng.uniform(1.4, 2.2)))
    if script == "latin":
        body = " ".join(next(paragraphs) for _ in range(3))
    else:
        body = pseudo_text(rng, script, 120)
    paper = rng.choice([(255, 255, 255), (250, 246, 232), (235, 240, 250), (30, 30, 34)])
    ink = (
        (235, 235, 235) if sum(paper) < 200 else rng.choice([(0, 0, 0), (30, 40, 90), (90, 20, 20)])
    )
    page = Image.new("RGB", (side, side), paper)
    draw = ImageDraw.Draw(page)
    margin = rng.randint(8, 30)
    # Right-to-left layout needs libraqm; without it the words still render, left to right.
    rtl = script in ("arabic", "hebrew") and features.check("raqm")
    direction = "rtl" if rtl else None
    title = " ".join(body.split()[: rng.randint(2, 4)]).title()
    draw.text((margin, margin), title, fill=ink, font=heading, direction=direction)
    y = margin + round(heading.size * 1.6)
    for line in wrap(draw, body, font, side - 2 * margin):
        if y + size > side - margin:
            break
        draw.text((margin, y), line, fill=ink, font=font, direction=direction)
        y += round(size * rng.uniform(1.2, 1.7))
    return page, f"{script} {font_path.name} {size}px"


def text_pages(n: int, side: int, seed: int = 0) -> Iterator[tuple[str, str, Image.Image]]:
    """``n`` seeded text pages as (name, description, image); none when no font is installed."""
    paragraphs = license_paragraphs()
    if not paragraphs or find_font(PAGE_FONTS["latin"]) is None:
        return
    # Pages take paragraphs in a seeded order without repeats (until all are used): two pages
    # that share a paragraph, set in one font, would be unlabeled partial copies.
    random.Random(f"{seed}:paragraphs").shuffle(paragraphs)
    cursor = itertools.cycle(paragraphs)
    for i in range(n):
        page, description = text_page(random.Random(f"{seed}:text-page:{i}"), cursor, side)
        yield f"page{i:04d}", description, page
