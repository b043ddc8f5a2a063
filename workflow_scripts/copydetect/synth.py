"""Query synthesizer: turn a folder of photographs into a labeled copy-detection benchmark.

The sources are split (seeded, after sorting) into references, distractor sources, training
images and an optional pool of overlay backgrounds. Each copy query is a reference with a chain
of random edits drawn from a named edit set; each distractor query is a non-reference image with
the same kind of edits, so edits alone do not give distractors away. The sets (``EDIT_SETS``):

- ``default`` (the demo's): crop, overlay onto a non-reference background, text, flip, rotation,
  color jitter, grayscale, blur, JPEG, border, perspective warp, shape clutter;
- ``disc21``: those plus the DISC21 kinds they lack: pixelization, local block shuffles, stripes,
  skew, strong perspective, emoji, text in several scripts, screenshot and meme frames, blends
  with another image, vertical flip, heavy JPEG (quality 3–15), aspect-ratio change. Fonts come
  from Debian's packages (fonts-dejavu, fonts-noto-core, fonts-noto-color-emoji) when installed;
  without them the edits fall back to Pillow's bundled font and a drawn smiley, and log it.

Output layout (``out_dir``)::

    references/R000000.jpg ...   reference images, longest side <= max_side
    queries/Q00000.jpg ...       copies and distractors, shuffled together
    training/T000000.jpg ...     only when n_training > 0; never references
    ground_truth.csv             query_id,reference_id (empty reference_id: distractor)
    edits.csv                    query_id,reference_id,edits (edit chain as JSON)
    sources.csv                  id,role,source: which source file each image came from

Everything is derived from ``random.Random`` instances seeded by ``(seed, purpose)`` strings, so
the same sources and seed give byte-identical files (on the same Pillow/libjpeg build).
"""

from __future__ import annotations

import argparse
import csv
import functools
import glob
import io
import json
import logging
import math
import os
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from copydetect.atomic import publish_entries, scratch_dir
from copydetect.rng import purpose_rng

log = logging.getLogger(__name__)

EditResult = tuple[Image.Image, dict[str, Any]]
EditFn = Callable[[Image.Image, random.Random], EditResult]
Color = tuple[int, int, int]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SAVE_QUALITY = 90  # fixed JPEG quality of every written image: part of byte-for-byte determinism
OUTPUT_NAMES = ("references", "queries", "training", "ground_truth.csv", "edits.csv", "sources.csv")
_WORDS = (
    "copy", "sale", "new", "lol", "wow", "meme", "top", "best", "free", "look", "omg", "when",
    "me", "you", "2021", "live", "news", "hot", "cool", "share", "like", "follow", "win", "now",
)  # fmt: skip


def _random_color(rng: random.Random) -> Color:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def fit_max_side(img: Image.Image, max_side: int) -> Image.Image:
    """Downscale (never upscale) so that the longest side is at most ``max_side``."""
    if max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


# --- Edits: each takes an RGB image and a generator, returns the edited image and its params ---


def edit_crop(img: Image.Image, rng: random.Random) -> EditResult:
    """Keep a random window of 30–90 % of the area, aspect ratio jittered by up to 4:3."""
    w, h = img.size
    area = rng.uniform(0.3, 0.9)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw = min(w, max(1, round(math.sqrt(area * w * h * aspect))))
    ch = min(h, max(1, round(math.sqrt(area * w * h / aspect))))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    box = [x, y, x + cw, y + ch]
    return img.crop(tuple(box)), {"op": "crop", "box": box, "area": round(cw * ch / (w * h), 3)}


def synthetic_background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A two-color gradient with a few blocks: the overlay background when no image is spare."""
    gradient = Image.linear_gradient("L").rotate(rng.choice([0, 90, 180, 270]))
    bg = ImageOps.colorize(gradient.resize(size), _random_color(rng), _random_color(rng))
    draw = ImageDraw.Draw(bg)
    for _ in range(rng.randint(2, 6)):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        x1, y1 = x0 + rng.randint(1, size[0] // 2 + 1), y0 + rng.randint(1, size[1] // 2 + 1)
        draw.rectangle((x0, y0, x1, y1), fill=_random_color(rng))
    return bg


def edit_overlay(
    img: Image.Image, rng: random.Random, background: Image.Image | None = None
) -> EditResult:
    """Paste the image onto a background at 30–90 % of the background's extent.

    The background is first scaled to the image's longest side so that the query keeps roughly
    the reference's resolution. ``box`` is where the pasted image lies in the result.
    """
    if background is None:
        background = synthetic_background(rng, img.size)
    bg = background.convert("RGB")
    bg_scale = max(img.size) / max(bg.size)
    bg = bg.resize((max(1, round(bg.width * bg_scale)), max(1, round(bg.height * bg_scale))))
    scale = rng.uniform(0.3, 0.9)
    factor = scale * min(bg.width / img.width, bg.height / img.height)
    fg = img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))))
    x, y = rng.randint(0, bg.width - fg.width), rng.randint(0, bg.height - fg.height)
    bg.paste(fg, (x, y))
    box = [x, y, x + fg.width, y + fg.height]
    return bg, {"op": "overlay", "scale": round(scale, 3), "box": box}


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font (Pillow >= 10.1 with FreeType): no download, no system font."""
    return ImageFont.load_default(size=size)


def edit_text(img: Image.Image, rng: random.Random) -> EditResult:
    """Write 1–4 random words at a random place, size and color (sometimes outlined)."""
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
    size = max(10, round(min(img.size) * rng.uniform(0.08, 0.25)))
    color, stroke = _random_color(rng), rng.choice([0, 0, 1, 2])
    font = _font(size)
    out = img.copy()
    draw = ImageDraw.Draw(out)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    x = rng.randint(0, max(0, img.width - (right - left))) - left
    y = rng.randint(0, max(0, img.height - (bottom - top))) - top
    draw.text((x, y), text, fill=color, font=font, stroke_width=stroke, stroke_fill=(0, 0, 0))
    params = {"op": "text", "text": text, "size": size, "color": list(color), "xy": [x, y]}
    return out, params


def edit_hflip(img: Image.Image, rng: random.Random) -> EditResult:
    """Mirror left-right (``rng`` unused: kept for the common signature)."""
    return ImageOps.mirror(img), {"op": "hflip"}


def edit_rotate(img: Image.Image, rng: random.Random) -> EditResult:
    """Rotate by a multiple of 90° (30 % of the time) or by ±5–30° with the canvas expanded."""
    if rng.random() < 0.3:
        angle = rng.choice([90, 180, 270])
        transpose = {
            90: Image.Transpose.ROTATE_90,
            180: Image.Transpose.ROTATE_180,
            270: Image.Transpose.ROTATE_270,
        }
        return img.transpose(transpose[angle]), {"op": "rotate", "angle": angle}
    angle = rng.uniform(5, 30) * rng.choice([-1, 1])
    fill = _random_color(rng)
    out = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill)
    return out, {"op": "rotate", "angle": round(angle, 2), "fill": list(fill)}


def edit_color(img: Image.Image, rng: random.Random) -> EditResult:
    """Jitter brightness, contrast and saturation, each by a factor in [0.5, 1.6]."""
    factors = {k: rng.uniform(0.5, 1.6) for k in ("brightness", "contrast", "saturation")}
    out = ImageEnhance.Brightness(img).enhance(factors["brightness"])
    out = ImageEnhance.Contrast(out).enhance(factors["contrast"])
    out = ImageEnhance.Color(out).enhance(factors["saturation"])
    return out, {"op": "color", **{k: round(v, 3) for k, v in factors.items()}}


def edit_grayscale(img: Image.Image, rng: random.Random) -> EditResult:
    """Drop the color (kept as 3-channel RGB like every other query)."""
    return ImageOps.grayscale(img).convert("RGB"), {"op": "grayscale"}


def edit_blur(img: Image.Image, rng: random.Random) -> EditResult:
    """Gaussian blur with a radius of 1–4 px."""
    radius = rng.uniform(1.0, 4.0)
    return img.filter(ImageFilter.GaussianBlur(radius)), {"op": "blur", "radius": round(radius, 2)}


def jpeg_roundtrip(img: Image.Image, quality: int) -> Image.Image:
    """The image encoded as JPEG at ``quality`` and decoded again."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return decoded.convert("RGB")


def edit_jpeg(img: Image.Image, rng: random.Random) -> EditResult:
    """Re-encode as JPEG at quality 15–60 (visible blocking and ringing)."""
    quality = rng.randint(15, 60)
    return jpeg_roundtrip(img, quality), {"op": "jpeg", "quality": quality}


def edit_pad(img: Image.Image, rng: random.Random) -> EditResult:
    """Add a border of 3–25 % of the side on each edge, one random color."""
    w, h = img.size
    border = [round(rng.uniform(0.03, 0.25) * s) for s in (w, h, w, h)]  # left, top, right, bottom
    fill = _random_color(rng)
    out = ImageOps.expand(img, border=tuple(border), fill=fill)
    return out, {"op": "pad", "border": border, "fill": list(fill)}


def _perspective_coeffs(
    dst: Sequence[tuple[float, float]], src: Sequence[tuple[float, float]]
) -> list[float]:
    """Coefficients for ``Image.transform(PERSPECTIVE)``, which maps output points to input."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    return np.linalg.solve(np.array(rows, dtype=float), np.array(rhs, dtype=float)).tolist()


def edit_perspective(img: Image.Image, rng: random.Random) -> EditResult:
    """Warp by moving each corner inward by up to 5–20 % of the side (a photo of a screen)."""
    w, h = img.size
    strength = rng.uniform(0.05, 0.2)
    src = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
    signs = [(1, 1), (-1, 1), (-1, -1), (1, -1)]  # inward direction of each corner
    dst = [
        (x + sx * rng.uniform(0, strength) * w, y + sy * rng.uniform(0, strength) * h)
        for (x, y), (sx, sy) in zip(src, signs, strict=True)
    ]
    fill = _random_color(rng)
    coeffs = _perspective_coeffs(dst, src)
    out = img.transform(
        img.size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC, fillcolor=fill
    )
    corners = [[round(x, 1), round(y, 1)] for x, y in dst]
    return out, {"op": "perspective", "corners": corners, "fill": list(fill)}


def _draw_smiley(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int]) -> None:
    """A yellow face: the emoji stand-in (no emoji font is needed)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    draw.ellipse(box, fill=(255, 204, 0), outline=(0, 0, 0))
    for ex in (0.3, 0.6):
        draw.ellipse((x0 + ex * w, y0 + 0.3 * h, x0 + (ex + 0.1) * w, y0 + 0.45 * h), fill=0)
    draw.arc((x0 + 0.25 * w, y0 + 0.35 * h, x0 + 0.75 * w, y0 + 0.8 * h), 20, 160, fill=0)


def edit_shapes(img: Image.Image, rng: random.Random) -> EditResult:
    """Scatter 3–10 emoji-like shapes (smileys, discs, boxes) of 5–20 % of the short side."""
    out = img.copy()
    draw = ImageDraw.Draw(out)
    kinds = []
    for _ in range(rng.randint(3, 10)):
        kind = rng.choice(["smiley", "ellipse", "rectangle"])
        side = max(4, round(min(img.size) * rng.uniform(0.05, 0.2)))
        x, y = rng.randint(0, max(0, img.width - side)), rng.randint(0, max(0, img.height - side))
        box = (x, y, x + side, y + side)
        if kind == "smiley":
            _draw_smiley(draw, box)
        elif kind == "ellipse":
            draw.ellipse(box, fill=_random_color(rng))
        else:
            draw.rectangle(box, fill=_random_color(rng))
        kinds.append(kind)
    return out, {"op": "shapes", "count": len(kinds), "kinds": kinds}


# --- DISC21 edit kinds (the "disc21" edit set; the demo's "default" set leaves them out) ---

FONT_ROOT = Path("/usr/share/fonts")  # Debian's fonts (fonts-dejavu, fonts-noto-*) when present
# Script -> (sample phrases, font files that cover it, best first). A script whose fonts are all
# absent falls back to Latin in Pillow's bundled font, and the edit log says so.
SCRIPTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "latin": (
        ("breaking news", "limited offer", "follow for more", "not a copy"),
        ("DejaVuSans-Bold.ttf", "NotoSans-Bold.ttf", "DejaVuSerif.ttf"),
    ),
    "cyrillic": (
        (
            "\u043f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440",
            "\u043d\u043e\u0432\u043e\u0441\u0442\u0438",
        ),
        ("DejaVuSans.ttf", "NotoSans-Regular.ttf"),
    ),
    "greek": (
        ("\u03b3\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u03ba\u03cc\u03c3\u03bc\u03b5",),
        ("DejaVuSans.ttf", "NotoSans-Regular.ttf"),
    ),
    "arabic": (
        (
            "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
            "\u0623\u062e\u0628\u0627\u0631",
        ),
        ("NotoSansArabic-Bold.ttf", "NotoSansArabic-Regular.ttf", "NotoNaskhArabic-Regular.ttf"),
    ),
    "hebrew": (
        ("\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",),
        ("NotoSansHebrew-Bold.ttf", "NotoSansHebrew-Regular.ttf", "DejaVuSans.ttf"),
    ),
    "devanagari": (
        ("\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",),
        ("NotoSansDevanagari-Bold.ttf", "NotoSansDevanagari-Regular.ttf"),
    ),
    "thai": (
        ("\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01",),
        ("NotoSansThai-Bold.ttf", "NotoSansThai-Regular.ttf"),
    ),
}  # fmt: skip
EMOJI_FONT = "NotoColorEmoji.ttf"
EMOJI_SIZE = 109  # the only size of Noto Color Emoji's bitmap strikes
# Code points of the pasted emoji (faces, heart, fire, thumbs up, party, rocket, cat, pizza).
_EMOJI_CODES = (0x1F602, 0x1F60D, 0x1F525, 0x1F44D, 0x1F389, 0x1F4AF, 0x1F60E, 0x1F914, 0x2764)
_EMOJIS = "".join(map(chr, (*_EMOJI_CODES, 0x1F680, 0x1F431, 0x1F355)))


@functools.lru_cache(maxsize=1)
def _installed_fonts() -> dict[str, Path]:
    """File name -> path of every TrueType/OpenType font under ``FONT_ROOT`` (first in sorted
    order on a name clash); empty when the folder is absent."""
    if not FONT_ROOT.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(FONT_ROOT.rglob("*")):
        if path.suffix.lower() in (".ttf", ".otf", ".ttc"):
            found.setdefault(path.name, path)
    return found


def find_font(names: Sequence[str]) -> Path | None:
    """The first of ``names`` installed on this machine, or ``None``."""
    fonts = _installed_fonts()
    return next((fonts[n] for n in names if n in fonts), None)


@functools.lru_cache(maxsize=128)
def _truetype(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def script_font(
    script: str, size: int
) -> tuple[str, str, ImageFont.FreeTypeFont | ImageFont.ImageFont]:
    """(script actually used, font file name, font): the script's first installed font, else
    Latin in Pillow's bundled font (it has no glyphs for the other scripts)."""
    path = find_font(SCRIPTS[script][1])
    if path is None:
        return "latin", "pillow-default", _font(size)
    return script, path.name, _truetype(str(path), size)


def _draw_text_box(
    out: Image.Image, rng: random.Random, text: str, font: Any, color: Color, stroke: int
) -> list[int]:
    """Draw ``text`` at a random place where it fits (clipped if it cannot); returns its xy."""
    draw = ImageDraw.Draw(out)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    x = rng.randint(0, max(0, out.width - (right - left))) - left
    y = rng.randint(0, max(0, out.height - (bottom - top))) - top
    draw.text((x, y), text, fill=color, font=font, stroke_width=stroke, stroke_fill=(0, 0, 0))
    return [x, y]


def edit_text_script(img: Image.Image, rng: random.Random) -> EditResult:
    """Write a phrase in a random script (Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari,
    Thai) with a Debian font that covers it, 6–20 % of the short side high."""
    script = rng.choice(sorted(SCRIPTS))
    text = rng.choice(SCRIPTS[script][0])
    size = max(10, round(min(img.size) * rng.uniform(0.06, 0.2)))
    color, stroke = _random_color(rng), rng.choice([0, 1, 2])
    used, font_name, font = script_font(script, size)
    if used != script:
        text = rng.choice(SCRIPTS["latin"][0])
    out = img.copy()
    xy = _draw_text_box(out, rng, text, font, color, stroke)
    params = {"op": "text_script", "script": used, "font": font_name, "text": text}
    return out, {**params, "size": size, "color": list(color), "xy": xy}


def _emoji_glyph(char: str, side: int) -> Image.Image | None:
    """One color emoji as an RGBA square of ``side`` px, or ``None`` without the emoji font."""
    path = find_font([EMOJI_FONT])
    if path is None:
        return None
    try:
        font = _truetype(str(path), EMOJI_SIZE)
    except OSError:  # a FreeType build without color bitmap support
        return None
    glyph = Image.new("RGBA", (EMOJI_SIZE * 2, EMOJI_SIZE * 2), (0, 0, 0, 0))
    ImageDraw.Draw(glyph).text((0, 0), char, font=font, embedded_color=True)
    box = glyph.getbbox()
    if box is None:
        return None
    return glyph.crop(box).resize((side, side), Image.Resampling.LANCZOS)


def edit_emoji(img: Image.Image, rng: random.Random) -> EditResult:
    """Paste 1–6 color emoji (Noto Color Emoji), 8–30 % of the short side, some turned; the
    drawn smiley stands in when the font is absent."""
    out = img.convert("RGBA")
    placed = []
    for _ in range(rng.randint(1, 6)):
        char = rng.choice(_EMOJIS)
        side = max(6, round(min(img.size) * rng.uniform(0.08, 0.3)))
        angle = rng.choice([0, 0, rng.uniform(-40, 40)])
        x, y = rng.randint(0, max(0, img.width - side)), rng.randint(0, max(0, img.height - side))
        glyph = _emoji_glyph(char, side)
        if glyph is None:
            _draw_smiley(ImageDraw.Draw(out), (x, y, x + side, y + side))
            placed.append("smiley")
            continue
        glyph = glyph.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        out.alpha_composite(glyph, (x, y))
        placed.append(f"U+{ord(char):X}")
    return out.convert("RGB"), {"op": "emoji", "glyphs": placed}


def edit_pixelize(img: Image.Image, rng: random.Random) -> EditResult:
    """Downscale to 4–20 % of the size, then scale back up with nearest neighbour (blocks)."""
    ratio = rng.uniform(0.04, 0.2)
    small = (max(1, round(img.width * ratio)), max(1, round(img.height * ratio)))
    out = img.resize(small, Image.Resampling.BOX).resize(img.size, Image.Resampling.NEAREST)
    return out, {"op": "pixelize", "ratio": round(ratio, 3)}


def edit_shuffle(img: Image.Image, rng: random.Random) -> EditResult:
    """Local block shuffle: cut the image into b×b px blocks (b 2–8) and permute the blocks
    inside each g×g group of neighbours (g 2–4), in 40–100 % of the groups."""
    block, group = rng.choice([2, 3, 4, 6, 8]), rng.randint(2, 4)
    fraction = rng.uniform(0.4, 1.0)
    arr = np.array(img)
    cell = block * group
    gh, gw = arr.shape[0] // cell, arr.shape[1] // cell
    if gh == 0 or gw == 0:  # smaller than one group: fall back to a single block grid
        gh, gw, group = 1, 1, 1
    region = arr[: gh * cell, : gw * cell]
    blocks = region.reshape(gh, group, block, gw, group, block, 3).transpose(0, 3, 1, 4, 2, 5, 6)
    blocks = blocks.reshape(gh, gw, group * group, block, block, 3)
    nrng = np.random.default_rng(rng.getrandbits(64))
    order = np.argsort(nrng.random((gh, gw, group * group)), axis=2)
    keep = nrng.random((gh, gw)) >= fraction  # groups left in place
    order[keep] = np.arange(group * group)
    shuffled = np.take_along_axis(blocks, order[..., None, None, None], axis=2)
    shuffled = shuffled.reshape(gh, gw, group, group, block, block, 3).transpose(
        0, 2, 4, 1, 3, 5, 6
    )
    arr[: gh * cell, : gw * cell] = shuffled.reshape(gh * cell, gw * cell, 3)
    params = {"op": "shuffle", "block": block, "group": group, "fraction": round(fraction, 3)}
    return Image.fromarray(arr), params


def edit_stripes(img: Image.Image, rng: random.Random) -> EditResult:
    """Overlay parallel stripes (1–12 % of the short side wide, 30–90 % opaque, one color) at
    0, 45, 90° or a random angle."""
    short = min(img.size)
    width = max(1, round(short * rng.uniform(0.01, 0.12)))
    spacing = width + max(2, round(short * rng.uniform(0.03, 0.2)))
    angle = rng.choice([0.0, 45.0, 90.0, rng.uniform(0, 180)])
    opacity, color = rng.uniform(0.3, 0.9), _random_color(rng)
    side = math.ceil(math.hypot(*img.size))  # a layer that still covers the image once turned
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for y in range(rng.randrange(spacing), side, spacing):
        draw.rectangle((0, y, side, y + width - 1), fill=(*color, round(255 * opacity)))
    layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC)
    x0, y0 = (side - img.width) // 2, (side - img.height) // 2
    out = img.convert("RGBA")
    out.alpha_composite(layer.crop((x0, y0, x0 + img.width, y0 + img.height)))
    params = {"op": "stripes", "width": width, "spacing": spacing, "angle": round(angle, 1)}
    return out.convert("RGB"), {**params, "opacity": round(opacity, 2), "color": list(color)}


def edit_skew(img: Image.Image, rng: random.Random) -> EditResult:
    """Shear along x or y by 10–35° (the canvas widens to keep every pixel), one fill color."""
    axis = rng.choice(["x", "y"])
    angle = rng.uniform(10, 35) * rng.choice([-1, 1])
    shear, fill = math.tan(math.radians(angle)), _random_color(rng)
    w, h = img.size
    if axis == "x":  # x_out = x + shear * y + offset
        offset = -min(0.0, shear * h)
        size, coeffs = (w + math.ceil(abs(shear) * h), h), (1, -shear, -offset, 0, 1, 0)
    else:
        offset = -min(0.0, shear * w)
        size, coeffs = (w, h + math.ceil(abs(shear) * w)), (1, 0, 0, -shear, 1, -offset)
    out = img.transform(
        size, Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC, fillcolor=fill
    )
    return out, {"op": "skew", "axis": axis, "angle": round(angle, 2), "fill": list(fill)}


def edit_perspective_strong(img: Image.Image, rng: random.Random) -> EditResult:
    """Warp by moving corners inward by 15–40 % of the side, two adjacent corners more than
    the others (a picture of a screen seen from the side)."""
    w, h = img.size
    src = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
    signs = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
    near = rng.randrange(4)  # this corner and the next are pulled in the most
    dst = []
    for i, ((x, y), (sx, sy)) in enumerate(zip(src, signs, strict=True)):
        low, high = (0.15, 0.4) if i in (near, (near + 1) % 4) else (0.0, 0.12)
        dst.append((x + sx * rng.uniform(low, high) * w, y + sy * rng.uniform(low, high) * h))
    fill = _random_color(rng)
    out = img.transform(
        img.size,
        Image.Transform.PERSPECTIVE,
        _perspective_coeffs(dst, src),
        Image.Resampling.BICUBIC,
        fillcolor=fill,
    )
    corners = [[round(x, 1), round(y, 1)] for x, y in dst]
    return out, {"op": "perspective_strong", "corners": corners, "fill": list(fill)}


def edit_vflip(img: Image.Image, rng: random.Random) -> EditResult:
    """Mirror top-bottom (``rng`` unused: kept for the common signature)."""
    return ImageOps.flip(img), {"op": "vflip"}


def edit_jpeg_heavy(img: Image.Image, rng: random.Random) -> EditResult:
    """Re-encode as JPEG at quality 3–15 (strong blocking, color bleeding)."""
    quality = rng.randint(3, 15)
    return jpeg_roundtrip(img, quality), {"op": "jpeg_heavy", "quality": quality}


def edit_aspect(img: Image.Image, rng: random.Random) -> EditResult:
    """Stretch one axis by a factor of 1.3–2 or squeeze it by 0.5–0.77 (aspect-ratio change)."""
    factor = math.exp(rng.uniform(math.log(1.3), math.log(2.0))) ** rng.choice([-1, 1])
    axis = rng.choice(["x", "y"])
    w, h = img.size
    size = (max(1, round(w * factor)), h) if axis == "x" else (w, max(1, round(h * factor)))
    out = img.resize(size, Image.Resampling.BICUBIC)
    return out, {"op": "aspect", "axis": axis, "factor": round(factor, 3)}


def edit_blend(
    img: Image.Image, rng: random.Random, other: Image.Image | None = None
) -> EditResult:
    """Blend another (non-reference) image over the whole picture at 20–55 % opacity."""
    if other is None:
        other = synthetic_background(rng, img.size)
    alpha = rng.uniform(0.2, 0.55)
    layer = ImageOps.fit(other.convert("RGB"), img.size, Image.Resampling.BICUBIC)
    return Image.blend(img, layer, alpha), {"op": "blend", "alpha": round(alpha, 3)}


def _ui_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (a typical UI font) when installed, else Pillow's bundled font."""
    path = find_font(["DejaVuSans.ttf", "NotoSans-Regular.ttf"])
    return _truetype(str(path), size) if path else _font(size)


def _fake_text_lines(
    draw: ImageDraw.ImageDraw, rng: random.Random, box: tuple[int, int, int, int], color: Color
) -> None:
    """Fill ``box`` with lines of random words, as the text around a picture in a page."""
    x0, y0, x1, y1 = box
    size = max(8, (y1 - y0) // 8) if y1 - y0 < 80 else rng.randint(10, 16)
    font, y = _ui_font(size), y0
    while y + size <= y1:
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 9)))
        draw.text((x0, y), words, fill=color, font=font)
        y += round(size * 1.5)
    del x1  # lines may run past the right edge: the page clips them, as a narrow window does


def edit_screenshot(img: Image.Image, rng: random.Random) -> EditResult:
    """Place the image inside a synthetic app window or web page: title bar with buttons,
    optional sidebar, lines of text above and below, status bar (light or dark theme)."""
    scale = rng.uniform(0.45, 0.85)  # image width / window width
    w, h = round(img.width / scale), round(img.height / scale * rng.uniform(0.8, 1.1))
    h = max(h, img.height + 60)
    dark = rng.random() < 0.4
    bg, fg = ((32, 33, 36), (220, 220, 220)) if dark else ((250, 250, 250), (40, 40, 40))
    out = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(out)
    bar = max(16, round(h * 0.05))
    draw.rectangle((0, 0, w, bar), fill=_random_color(rng) if rng.random() < 0.5 else (60, 60, 60))
    for i in range(3):  # window buttons
        cx = bar // 2 + i * bar
        draw.ellipse((cx - bar // 4, bar // 4, cx + bar // 4, 3 * bar // 4), fill=(230, 90, 80))
    draw.text(
        (4 * bar, bar // 5), rng.choice(_WORDS), fill=(255, 255, 255), font=_ui_font(bar // 2)
    )
    sidebar = round(w * rng.uniform(0.1, 0.2)) if rng.random() < 0.5 else 0
    if sidebar:
        draw.rectangle((0, bar, sidebar, h), fill=(225, 228, 232) if not dark else (45, 46, 50))
        _fake_text_lines(draw, rng, (6, bar + 8, sidebar, h), fg)
    x = rng.randint(sidebar, max(sidebar, w - img.width))
    y = rng.randint(bar + 4, max(bar + 4, h - img.height - bar))
    out.paste(img, (x, y))
    _fake_text_lines(draw, rng, (sidebar + 8, bar + 4, w, y - 4), fg)
    _fake_text_lines(draw, rng, (sidebar + 8, y + img.height + 6, w, h - bar), fg)
    draw.rectangle((0, h - bar // 2, w, h), fill=(200, 200, 200) if not dark else (20, 20, 20))
    box = [x, y, x + img.width, y + img.height]
    return out, {"op": "screenshot", "scale": round(scale, 3), "dark": dark, "box": box}


def _caption_font(text: str, size: int, width: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A bold font at ``size`` px or smaller, so that ``text`` fits in 95 % of ``width``."""
    path = find_font(["DejaVuSans-Bold.ttf", "NotoSans-Bold.ttf", "DejaVuSans.ttf"])
    while True:
        font = _truetype(str(path), size) if path else _font(size)
        if size <= 8 or font.getlength(text) <= 0.95 * width:
            return font
        size = max(8, round(size * 0.85))


def edit_meme(img: Image.Image, rng: random.Random) -> EditResult:
    """A meme layout: a white caption bar above the picture with black text (DISC21's meme
    format), or white outlined captions written over its top and bottom."""
    style = rng.choice(["bar", "impact"])
    size = max(10, round(min(img.size) * rng.uniform(0.08, 0.14)))
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 4))).upper()]
    if style == "bar":
        font = _caption_font(lines[0], size, img.width)
        bar = round(size * rng.uniform(1.6, 3.0))
        out = Image.new("RGB", (img.width, img.height + bar), (255, 255, 255))
        out.paste(img, (0, bar))
        draw = ImageDraw.Draw(out)
        width = draw.textlength(lines[0], font=font)
        draw.text(((img.width - width) / 2, (bar - size) / 2), lines[0], fill=0, font=font)
        return out, {"op": "meme", "style": style, "bar": bar, "text": lines}
    out = img.copy()
    draw = ImageDraw.Draw(out)
    lines.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4))).upper())
    for text, y in zip(lines, (size // 3, img.height - size * 4 // 3), strict=True):
        font = _caption_font(text, size, img.width)
        width = draw.textlength(text, font=font)
        xy = ((img.width - width) / 2, y)
        draw.text(xy, text, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=0)
    return out, {"op": "meme", "style": style, "text": lines}


EDITS: dict[str, EditFn] = {
    "crop": edit_crop,
    "overlay": edit_overlay,
    "text": edit_text,
    "hflip": edit_hflip,
    "rotate": edit_rotate,
    "color": edit_color,
    "grayscale": edit_grayscale,
    "blur": edit_blur,
    "jpeg": edit_jpeg,
    "pad": edit_pad,
    "perspective": edit_perspective,
    "shapes": edit_shapes,
    "aspect": edit_aspect,
    "blend": edit_blend,
    "emoji": edit_emoji,
    "jpeg_heavy": edit_jpeg_heavy,
    "meme": edit_meme,
    "perspective_strong": edit_perspective_strong,
    "pixelize": edit_pixelize,
    "screenshot": edit_screenshot,
    "shuffle": edit_shuffle,
    "skew": edit_skew,
    "stripes": edit_stripes,
    "text_script": edit_text_script,
    "vflip": edit_vflip,
}
# Edits that take a second (non-reference) image: overlay pastes onto it, blend mixes it in.
BACKGROUND_EDITS = {"overlay": edit_overlay, "blend": edit_blend}
# Named edit sets a chain draws from. "default" is the demo's set (changing it changes the demo's
# data); "disc21" adds the DISC21 edit kinds it lacks, for a harder benchmark.
EDIT_SETS: dict[str, tuple[str, ...]] = {
    "default": (
        "crop", "overlay", "text", "hflip", "rotate", "color", "grayscale", "blur", "jpeg",
        "pad", "perspective", "shapes",
    ),
    "disc21": tuple(EDITS),
}  # fmt: skip


def apply_edit_chain(
    img: Image.Image,
    rng: random.Random,
    n_edits: int,
    background_for: Callable[[random.Random], tuple[str, Image.Image | None]],
    ops: Sequence[str] = EDIT_SETS["default"],
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """Apply ``n_edits`` distinct edits of ``ops`` in random order; returns the image and the
    chain log.

    ``background_for(rng)`` picks an overlay background and its label (image ``None``: use a
    synthetic one); it is only called when the chain contains an overlay or a blend.
    """
    chain = []
    for op in rng.sample(sorted(ops), n_edits):
        if op in BACKGROUND_EDITS:
            label, background = background_for(rng)
            img, params = BACKGROUND_EDITS[op](img, rng, background)
            params["background"] = label
        else:
            img, params = EDITS[op](img, rng)
        chain.append(params)
    return img, chain


# --- Configuration and source handling ---


@dataclass(frozen=True)
class SynthesisConfig:
    """Sizes of the benchmark to build. ``n_backgrounds`` extra non-reference images are held
    out as overlay backgrounds (the distractor sources are used as backgrounds too)."""

    n_references: int
    n_copy_queries: int
    n_distractors: int
    n_training: int = 0
    seed: int = 0
    max_side: int = 512
    min_edits: int = 1
    max_edits: int = 3
    n_backgrounds: int = 0
    edit_set: str = "default"  # a key of EDIT_SETS

    def __post_init__(self) -> None:
        if self.edit_set not in EDIT_SETS:
            raise ValueError(f"edit_set must be one of {sorted(EDIT_SETS)}, got {self.edit_set!r}")
        if self.n_references < 1:
            raise ValueError(f"n_references must be >= 1, got {self.n_references}")
        for name in ("n_copy_queries", "n_distractors", "n_training", "n_backgrounds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.min_edits <= self.max_edits <= len(self.edits):
            raise ValueError(
                f"need 0 <= min_edits <= max_edits <= {len(self.edits)}, "
                f"got {self.min_edits}, {self.max_edits}"
            )
        if self.max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {self.max_side}")

    @property
    def edits(self) -> tuple[str, ...]:
        """The edit names a chain draws from."""
        return EDIT_SETS[self.edit_set]

    @property
    def n_sources_needed(self) -> int:
        """Distinct readable source images the split consumes."""
        return self.n_references + self.n_distractors + self.n_training + self.n_backgrounds


@dataclass(frozen=True)
class SynthesisSummary:
    """What ``synthesize`` wrote (and how many unreadable sources it skipped)."""

    n_references: int
    n_copy_queries: int
    n_distractors: int
    n_training: int
    n_backgrounds: int
    n_skipped: int
    n_held_out: int = 0  # sources whose group's role was full (``split_sources``)

    @property
    def n_queries(self) -> int:
        return self.n_copy_queries + self.n_distractors


@dataclass
class SourceSplit:
    """Readable source paths by role, in the (seeded) order they were drawn."""

    references: list[Path]
    distractors: list[Path]
    training: list[Path]
    backgrounds: list[Path]
    n_skipped: int = 0
    n_held_out: int = 0  # readable sources left out because their group's role was full


@dataclass(frozen=True)
class QueryPlan:
    """One query to render: its source, its reference (``""``: distractor), its RNG key."""

    source: Path
    reference_id: str
    key: str


def load_rgb(path: Path, max_side: int) -> Image.Image | None:
    """Decode an image as RGB, EXIF-rotated and fitted to ``max_side``; ``None`` if unreadable."""
    try:
        with Image.open(path) as im:
            img = ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("skipping unreadable source image %s: %s", path, exc)
        return None
    return fit_max_side(img, max_side)


def resolve_sources(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand directories (recursively, image suffixes only), glob patterns and files."""
    found: set[Path] = set()
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.add(path)
        else:
            matches = [Path(p) for p in glob.glob(str(spec), recursive=True)]
            if not matches:
                log.warning("no source images match %s", spec)
            found.update(p for p in matches if p.is_file())
    return sorted(found)


def split_sources(
    sources: Sequence[Path], cfg: SynthesisConfig, groups: Mapping[Path, str] | None = None
) -> SourceSplit:
    """Shuffle the sorted sources with the seed and deal them out, skipping unreadable ones.

    ``groups`` names the sources that share content (the tiles of one wallpaper, icons drawn
    from one set of parts): a group goes to one role only (:func:`group_roles`), so that no
    distractor, training image or overlay background is an unlabeled partial copy of a
    reference. Members beyond their role's quota are held out (counted, never used).

    Raises ``ValueError`` when there are too few (readable) sources for the requested sizes.
    """
    candidates = sorted(set(sources))
    needed = cfg.n_sources_needed
    if len(candidates) < needed:
        raise ValueError(
            f"not enough source images: need {needed} (references {cfg.n_references} + "
            f"distractors {cfg.n_distractors} + training {cfg.n_training} + backgrounds "
            f"{cfg.n_backgrounds}), given {len(candidates)}"
        )
    purpose_rng(cfg.seed, "split").shuffle(candidates)
    quotas = [cfg.n_references, cfg.n_distractors, cfg.n_training, cfg.n_backgrounds]
    role_of = group_roles(candidates, groups, quotas) if groups else None
    roles: list[list[Path]] = [[] for _ in quotas]
    skipped, held_out, role = 0, 0, 0
    for path in candidates:
        while role < len(quotas) and len(roles[role]) == quotas[role]:
            role += 1
        if role == len(quotas):
            break
        wanted = role_of[path] if role_of else role
        if len(roles[wanted]) == quotas[wanted]:
            held_out += 1
            continue
        if load_rgb(path, cfg.max_side) is None:  # decoded once here only to test readability
            skipped += 1
            continue
        roles[wanted].append(path)
    readable = sum(len(r) for r in roles)
    if readable < needed:
        grouped = f" and {held_out} held out with their group" if held_out else ""
        raise ValueError(
            f"not enough readable source images: need {needed}, given {len(candidates)} "
            f"of which {skipped} are unreadable{grouped}"
        )
    if held_out:
        log.info("%d sources held out: their group's role was full", held_out)
    return SourceSplit(*roles, n_skipped=skipped, n_held_out=held_out)


def group_roles(
    candidates: Sequence[Path], groups: Mapping[Path, str], quotas: Sequence[int]
) -> dict[Path, int]:
    """The role index of every source: each group (a source without one is its own), in the
    order its first member was drawn, goes whole to the role whose quota is least supplied so
    far (remaining share). Every role is then supplied in proportion to its quota with a mix
    of every kind: dealing members one by one would hand each large group (a wallpaper's 80
    tiles) to whichever role was being filled when its first tile came up."""
    members: dict[str, list[Path]] = {}
    for path in candidates:
        members.setdefault(groups.get(path, f"\0{path}"), []).append(path)
    supplied = [0] * len(quotas)
    role_of: dict[Path, int] = {}
    for paths in members.values():
        role = max(
            (r for r, quota in enumerate(quotas) if quota > 0),
            key=lambda r: ((quotas[r] - supplied[r]) / quotas[r], -r),
        )
        supplied[role] += len(paths)
        role_of.update(dict.fromkeys(paths, role))
    return role_of


# --- Rendering the benchmark ---


def _save_jpeg(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=SAVE_QUALITY)


def _labeler(sources: Sequence[Path]) -> Callable[[Path], str]:
    """Name sources relative to their common folder, so logs do not depend on where they live."""
    root = Path(os.path.commonpath([str(p.parent.absolute()) for p in sources]))
    return lambda p: p.absolute().relative_to(root).as_posix()


def _write_image_set(
    paths: Sequence[Path], folder: Path, prefix: str, digits: int, max_side: int
) -> list[str]:
    """Re-save each source as ``{prefix}{index}.jpg``; returns the ids in order."""
    ids = []
    for i, path in enumerate(paths):
        image_id = f"{prefix}{i:0{digits}d}"
        img = load_rgb(path, max_side)
        if img is None:  # readable a moment ago in split_sources: the file changed under us
            raise OSError(f"source image became unreadable: {path}")
        _save_jpeg(img, folder / f"{image_id}.jpg")
        ids.append(image_id)
    return ids


def plan_queries(
    split: SourceSplit, reference_ids: list[str], cfg: SynthesisConfig
) -> list[QueryPlan]:
    """Copies (references in seeded order, cycling if there are more queries than references)
    and distractors, shuffled together; the list index becomes the query id."""
    order = list(range(len(reference_ids)))
    purpose_rng(cfg.seed, "copy-sources").shuffle(order)
    plans = []
    for i in range(cfg.n_copy_queries):
        ref = order[i % len(order)]
        plans.append(QueryPlan(split.references[ref], reference_ids[ref], f"copy:{i}"))
    for i, path in enumerate(split.distractors):
        plans.append(QueryPlan(path, "", f"distractor:{i}"))
    purpose_rng(cfg.seed, "query-order").shuffle(plans)
    return plans


def _background_picker(
    pool: Sequence[Path], exclude: Path, label: Callable[[Path], str], max_side: int
) -> Callable[[random.Random], tuple[str, Image.Image | None]]:
    """Overlay backgrounds come only from non-reference images (never the query's own source)."""
    candidates = [p for p in pool if p != exclude]

    def pick(rng: random.Random) -> tuple[str, Image.Image | None]:
        if not candidates:
            return "synthetic", None
        path = rng.choice(candidates)
        return label(path), load_rgb(path, max_side)

    return pick


def render_query(
    plan: QueryPlan, pool: Sequence[Path], label: Callable[[Path], str], cfg: SynthesisConfig
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """Edit one query's source: copies get min..max edits, distractors 0..max (so that the
    number of edits does not tell them apart)."""
    rng = purpose_rng(cfg.seed, plan.key)
    img = load_rgb(plan.source, cfg.max_side)
    if img is None:
        raise OSError(f"source image became unreadable: {plan.source}")
    low = cfg.min_edits if plan.reference_id else 0
    pick = _background_picker(pool, plan.source, label, cfg.max_side)
    img, chain = apply_edit_chain(img, rng, rng.randint(low, cfg.max_edits), pick, cfg.edits)
    return fit_max_side(img, cfg.max_side), chain


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_queries(
    plans: Sequence[QueryPlan],
    split: SourceSplit,
    label: Callable[[Path], str],
    cfg: SynthesisConfig,
    out: Path,
) -> list[list[str]]:
    """Render and save every query, write ground_truth.csv and edits.csv; returns the
    ``id,role,source`` rows of the distractors for sources.csv."""
    pool = [*split.distractors, *split.backgrounds]
    truth, edits, distractor_rows = [], [], []
    for i, plan in enumerate(plans):
        query_id = f"Q{i:05d}"
        img, chain = render_query(plan, pool, label, cfg)
        _save_jpeg(img, out / "queries" / f"{query_id}.jpg")
        truth.append([query_id, plan.reference_id])
        edits.append([query_id, plan.reference_id, json.dumps(chain, separators=(",", ":"))])
        if not plan.reference_id:
            distractor_rows.append([query_id, "distractor", label(plan.source)])
    (out / "queries").mkdir(parents=True, exist_ok=True)  # an empty query set is still a set
    _write_csv(out / "ground_truth.csv", ["query_id", "reference_id"], truth)
    _write_csv(out / "edits.csv", ["query_id", "reference_id", "edits"], edits)
    return distractor_rows


def _synthesize_into(
    sources: Sequence[Path],
    out: Path,
    cfg: SynthesisConfig,
    groups: Mapping[Path, str] | None = None,
) -> SynthesisSummary:
    split = split_sources(sources, cfg, groups)
    label = _labeler(sources)
    ref_ids = _write_image_set(split.references, out / "references", "R", 6, cfg.max_side)
    train_ids = _write_image_set(split.training, out / "training", "T", 6, cfg.max_side)
    plans = plan_queries(split, ref_ids, cfg)
    distractor_rows = _write_queries(plans, split, label, cfg, out)
    rows = [[i, "reference", label(p)] for i, p in zip(ref_ids, split.references, strict=True)]
    rows += [[i, "training", label(p)] for i, p in zip(train_ids, split.training, strict=True)]
    rows += distractor_rows + [["", "background", label(p)] for p in split.backgrounds]
    _write_csv(out / "sources.csv", ["id", "role", "source"], rows)
    return SynthesisSummary(
        n_references=len(ref_ids),
        n_copy_queries=cfg.n_copy_queries,
        n_distractors=len(split.distractors),
        n_training=len(train_ids),
        n_backgrounds=len(split.backgrounds),
        n_skipped=split.n_skipped,
        n_held_out=split.n_held_out,
    )


def synthesize(
    sources: Sequence[Path],
    out_dir: Path,
    cfg: SynthesisConfig,
    groups: Mapping[Path, str] | None = None,
) -> SynthesisSummary:
    """Build the benchmark from ``sources`` into ``out_dir`` (see the module docstring);
    ``groups`` keeps sources that share content in one role (:func:`split_sources`).

    Files are written into a staging folder next to ``out_dir`` and moved in only on success, so
    a failed or killed run leaves no half-written set behind.
    """
    out_dir = Path(out_dir)
    with scratch_dir(out_dir.parent, f".{out_dir.name}.synth-") as stage:
        by_path = {Path(p): g for p, g in groups.items()} if groups else None
        summary = _synthesize_into([Path(p) for p in sources], stage, cfg, by_path)
        # Only this synthesizer's outputs are replaced: stale ones of a larger run never survive.
        publish_entries(stage, out_dir, OUTPUT_NAMES)
    log.info("synthesized %s into %s", summary, out_dir)
    return summary


# --- Offline demo sources: scikit-image's bundled photographs, cut into tiles ---

# Natural photographs that scikit-image ships inside its wheel (no pooch download). Left out:
# motorcycle_right (a stereo twin of the left view: an unlabeled near-duplicate), cat (the same
# picture as chelsea), textures (brick, grass, gravel: their tiles look alike), documents and
# synthetic images, and everything that needs a download (eagle, lily, skin, ...).
SKIMAGE_PHOTOS: dict[str, str] = {  # tile name -> skimage.data function
    "astronaut": "astronaut",
    "camera": "camera",
    "chelsea": "chelsea",
    "coffee": "coffee",
    "coins": "coins",
    "hubble_deep_field": "hubble_deep_field",
    "immunohistochemistry": "immunohistochemistry",
    "moon": "moon",
    "motorcycle_left": "stereo_motorcycle",  # returns (left, right, disparity)
    "retina": "retina",
    "rocket": "rocket",
}


def load_skimage_photo(function: str) -> Image.Image:
    """Load one sample photo as RGB; scikit-image is imported lazily (only the demo needs it)."""
    import skimage.data

    data = getattr(skimage.data, function)()
    return Image.fromarray(data[0] if isinstance(data, tuple) else data).convert("RGB")


def photo_tiles(
    photo: Image.Image, tile_min: int = 160, max_grid: int = 4, min_std: float = 15.0
) -> list[tuple[tuple[int, int], Image.Image]]:
    """Cut a photo into a grid of non-overlapping tiles at least ``tile_min`` px wide.

    Flat tiles (grayscale std < ``min_std``: sky, the retina's uniform center) are dropped, as
    they look alike across photos and would act as unlabeled duplicates.
    """
    w, h = photo.size
    rows, cols = (max(1, min(max_grid, s // tile_min)) for s in (h, w))
    tiles = []
    for r in range(rows):
        for c in range(cols):
            box = (c * w // cols, r * h // rows, (c + 1) * w // cols, (r + 1) * h // rows)
            tile = photo.crop(box)
            if float(np.asarray(tile.convert("L"), dtype=np.float32).std()) >= min_std:
                tiles.append(((r, c), tile))
    return tiles


def skimage_sources(dest_dir: Path, tile_min: int = 160) -> list[Path]:
    """Write tiles of scikit-image's bundled photographs as PNG files; returns their paths.

    Honest caveat: the ~84 tiles come from only 11 photographs. Tiles do not overlap, so none is
    a copy of another, but tiles of one photo share its subject, colors and camera (all hubble
    tiles are star fields), which makes them harder negatives than unrelated photos would be.
    Photos that fail to load (e.g. a build without the bundled file) are skipped with a warning.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, function in SKIMAGE_PHOTOS.items():
        try:
            photo = load_skimage_photo(function)
        except Exception as exc:  # any failure (file not bundled, pooch absent, no network): skip
            log.warning("skipping scikit-image photo %s: %s", name, exc)
            continue
        for (r, c), tile in photo_tiles(photo, tile_min=tile_min):
            path = dest_dir / f"{name}_r{r}c{c}.png"
            tile.save(path, format="PNG")
            paths.append(path)
    return paths


# --- Command line ---


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m copydetect.synth",
        description="Make references, edited-copy and distractor queries and ground truth.",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--sources", nargs="+", metavar="DIR_OR_GLOB", help="source photographs")
    src.add_argument(
        "--skimage",
        metavar="DIR",
        type=Path,
        help="write tiles of scikit-image's sample photos to DIR and use them as sources",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--references", required=True, type=int)
    parser.add_argument("--queries", required=True, type=int, help="edited-copy queries")
    parser.add_argument("--distractors", required=True, type=int)
    parser.add_argument("--training", type=int, default=0)
    parser.add_argument("--backgrounds", type=int, default=0, help="extra overlay backgrounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--min-edits", type=int, default=1)
    parser.add_argument("--max-edits", type=int, default=3)
    parser.add_argument("--edit-set", choices=sorted(EDIT_SETS), default="default")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on a bad request, like argparse)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = SynthesisConfig(
            n_references=args.references,
            n_copy_queries=args.queries,
            n_distractors=args.distractors,
            n_training=args.training,
            seed=args.seed,
            max_side=args.max_side,
            min_edits=args.min_edits,
            max_edits=args.max_edits,
            n_backgrounds=args.backgrounds,
            edit_set=args.edit_set,
        )
        sources = skimage_sources(args.skimage) if args.skimage else resolve_sources(args.sources)
        summary = synthesize(sources, args.out, cfg)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    print(json.dumps({**vars(summary), "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
