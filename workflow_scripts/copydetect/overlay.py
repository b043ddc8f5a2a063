"""Overlay detection without a detector: the training data and the box filters.

Many copy-detection queries show a reference pasted onto another picture, a screenshot or a meme
frame. A YOLO detector (``copydetect.detector``) finds the pasted region so that it can be cropped
and searched again. This module holds the parts that need no deep-learning library:

* a seeded synthesizer of a YOLO dataset (``synthesize_overlay_dataset``): source images pasted
  onto other source images, plain colours and gradients, screenshot-like pages and meme frames,
  with small rotations, borders, text and emoji-like clutter, plus negatives without a paste;
* the filters that decide which detected box, if any, is kept (``select_box``).

Paste scale is a *side* fraction: at scale ``s`` the pasted image is resized to fill ``s`` of the
paste region along the side where it fits tightest (the other side gets less), so its area is at
most ``s**2`` of the region. The label box is the pasted *content*: a border drawn around the
paste is outside it, and a rotated paste is labeled with the bounding box of its rotated content.

Dataset layout (YOLO)::

    images/{train,val}/000000.jpg   labels/{train,val}/000000.txt   (class 0 = pasted content,
    data.yaml                       normalized cx cy w h; a negative has an empty label file)
    summary.json                    counts, seed, parameters
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFont, ImageOps

from copydetect.atomic import atomic_directory
from copydetect.params import config_params
from copydetect.rng import purpose_rng
from copydetect.shards import decode_rgb, read_jpegs, read_shard_ids
from copydetect.synth import edit_shapes

logger = logging.getLogger(__name__)

CLASS_NAME = "pasted"
SPLITS = ("train", "val")
KINDS = ("photo", "plain", "screenshot", "meme")
# Canvas aspect ratios (width, height) of synthetic frames: square, photo and phone/desktop screens.
ASPECTS = ((1, 1), (4, 3), (3, 4), (16, 9), (9, 16))
# Images rendered per block: sources are read block by block, so memory does not grow with the
# dataset or with the number of source images.
BLOCK_SIZE = 128
_FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"  # shipped with matplotlib
_WORDS = (
    "when", "you", "me", "my", "the", "new", "sale", "lol", "omg", "look", "best", "free", "share",
    "like", "follow", "today", "news", "live", "reply", "posted", "photo", "see", "more", "2021",
)  # fmt: skip
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
Color = tuple[int, int, int]


class OverlayDataError(ValueError):
    """The dataset cannot be built from these inputs (a message naming the problem)."""


# --- Parameters -------------------------------------------------------------------------------


@config_params("overlay.dataset")
class DatasetParams:
    """The ``overlay.dataset`` section of the config."""

    train_images: int
    val_images: int  # the detector is validated: at least one
    image_size: int  # longest side of every synthesized image
    min_scale: float  # paste side fraction of its region (see the module docstring)
    max_scale: float
    seed: int
    negative_fraction: float  # images without a paste: the detector must learn "no box"
    max_rotation: float  # degrees; queries are rotated a little, rarely much
    rotation_probability: float
    border_probability: float
    text_probability: float  # words over the composite (they may cover the paste)
    shape_probability: float  # emoji-like discs, boxes and smileys

    def __post_init__(self) -> None:
        if self.min_scale > self.max_scale:
            raise ValueError(f"need min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")


@config_params("overlay.detect")
class DetectParams:
    """The ``overlay.detect`` section of the config: inference and box filters."""

    image_size: int
    global_confidence: float  # the crop feeds global descriptors: be strict
    local_confidence: float  # local matching rejects a wrong crop by itself: be lenient
    max_area_fraction: float  # a box covering nearly the whole image means no overlay
    min_area_fraction: float  # smaller crops hold too few pixels to match anything
    max_aspect_ratio: float  # w/h within [1/this, this]
    batch_size: int
    device: str

    def __post_init__(self) -> None:
        if self.min_area_fraction >= self.max_area_fraction:
            raise ValueError(
                f"need min_area_fraction < max_area_fraction, "
                f"got {self.min_area_fraction}, {self.max_area_fraction}"
            )


# --- Box filters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoxChoice:
    """The box kept for one image, or why none was.

    ``box`` is the kept box (clipped to the image, rounded outward to whole pixels) or None.
    When nothing is kept, ``rejected_box``, ``confidence``, ``area_fraction`` and
    ``aspect_ratio`` describe the most confident box (NaN and None when there was no box at all)
    and ``reason`` says why it failed: ``no_box``, ``too_large``, ``too_small``, ``bad_aspect``
    or ``low_confidence`` (geometry is checked first: a whole-image box means "no overlay"
    whatever its confidence). ``reason`` is ``ok`` for a kept box.
    """

    box: tuple[int, int, int, int] | None
    confidence: float
    area_fraction: float
    aspect_ratio: float
    reason: str
    rejected_box: tuple[int, int, int, int] | None = None

    @property
    def kept(self) -> bool:
        return self.box is not None

    @property
    def described_box(self) -> tuple[int, int, int, int] | None:
        """The box the numbers describe: the kept one, else the rejected best one."""
        return self.box if self.box is not None else self.rejected_box


NO_BOX = BoxChoice(None, math.nan, math.nan, math.nan, "no_box")


def clip_box(box: Sequence[float], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Round a box outward to whole pixels and clip it to the image ``(width, height)``."""
    w, h = image_size
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(w, math.ceil(box[2])), min(h, math.ceil(box[3]))
    return x0, y0, max(x0, x1), max(y0, y1)


def _box_failure(
    box: tuple[int, int, int, int], image_size: tuple[int, int], params: DetectParams
) -> tuple[float, float, str]:
    """``(area_fraction, aspect_ratio, failure)`` of a clipped box; failure "" if it passes."""
    w, h = box[2] - box[0], box[3] - box[1]
    area = w * h / float(image_size[0] * image_size[1])
    aspect = w / h if h > 0 else math.inf
    if area > params.max_area_fraction:
        return area, aspect, "too_large"
    if area < params.min_area_fraction or w == 0 or h == 0:
        return area, aspect, "too_small"
    if not 1 / params.max_aspect_ratio <= aspect <= params.max_aspect_ratio:
        return area, aspect, "bad_aspect"
    return area, aspect, ""


def select_box(
    boxes: np.ndarray,
    confidences: np.ndarray,
    image_size: tuple[int, int],
    threshold: float,
    params: DetectParams,
) -> BoxChoice:
    """Keep the most confident box that passes the filters (see ``BoxChoice``).

    ``boxes`` are ``[n, 4]`` x0, y0, x1, y1 in the pixels of an image of ``image_size`` (width,
    height). Boxes are clipped and rounded outward before the filters. Equal confidences are
    ordered by the box coordinates, so the choice never depends on the detector's output order.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    confidences = np.asarray(confidences, dtype=np.float64).reshape(-1)
    if len(boxes) != len(confidences):
        raise ValueError(f"{len(boxes)} boxes but {len(confidences)} confidences")
    if len(boxes) == 0:
        return NO_BOX
    clipped = [clip_box(b, image_size) for b in boxes]
    # lexsort: the last key is the primary one (confidence, descending), then x0, y0, x1, y1.
    order = np.lexsort((*np.array(clipped, dtype=np.int64).T[::-1], -confidences))
    first: BoxChoice | None = None
    for i in order:
        area, aspect, failure = _box_failure(clipped[i], image_size, params)
        if not failure and confidences[i] < threshold:
            failure = "low_confidence"
        if not failure:
            return BoxChoice(clipped[i], float(confidences[i]), area, aspect, "ok")
        if first is None:
            first = BoxChoice(None, float(confidences[i]), area, aspect, failure, clipped[i])
    return first


# --- Composition ------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans from matplotlib's data folder: a TrueType font that is never downloaded."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(_FONT_DIR / name), size)


def _color(rng: random.Random) -> Color:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))


def _canvas_size(aspect: tuple[float, float], longest: int) -> tuple[int, int]:
    """Pixel size with the given aspect ratio and longest side ``longest``."""
    w, h = aspect
    scale = longest / max(w, h)
    return max(8, round(w * scale)), max(8, round(h * scale))


def _fit(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale and center-crop ``img`` to exactly ``size`` (a photo used as a whole background)."""
    return ImageOps.fit(img, size, Image.Resampling.BILINEAR)


def _gradient(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    gradient = Image.linear_gradient("L").rotate(rng.choice([0, 90, 180, 270]))
    return ImageOps.colorize(gradient.resize(size), _color(rng), _color(rng))


def plain_frame(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A solid colour or a two-colour gradient."""
    if rng.random() < 0.5:
        return Image.new("RGB", size, _color(rng))
    return _gradient(rng, size)


def screenshot_frame(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, Box]:
    """A phone/desktop page: status bar, app bar, lines of text, maybe a bottom bar of icons.

    Returns the page and the content region where a picture would be shown.
    """
    w, h = size
    dark = rng.random() < 0.3
    page = (18, 18, 18) if dark else (rng.randint(235, 255),) * 3
    ink = (220, 220, 220) if dark else (rng.randint(20, 90),) * 3
    img = Image.new("RGB", size, page)
    draw = ImageDraw.Draw(img)
    status = round(h * rng.uniform(0.02, 0.05))
    bar = status + round(h * rng.uniform(0.04, 0.09))
    draw.rectangle((0, 0, w, status), fill=(0, 0, 0) if rng.random() < 0.5 else page)
    draw.rectangle((0, status, w, bar), fill=_color(rng))
    title_font = font(max(8, round((bar - status) * 0.5)), bold=True)
    draw.text(
        (round(w * 0.04), status + (bar - status) // 4), _words(rng, 1, 3), (255,) * 3, title_font
    )
    bottom = h
    if rng.random() < 0.5:  # bottom navigation bar with round icons
        bottom = h - round(h * rng.uniform(0.05, 0.08))
        draw.rectangle((0, bottom, w, h), fill=_color(rng))
        r = (h - bottom) // 4
        for k in range(4):
            cx, cy = round(w * (k + 0.5) / 4), (bottom + h) // 2
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=page)
    line_font = font(max(8, round(h * rng.uniform(0.02, 0.035))))
    y = bar + round(h * 0.02)
    while y < bottom - line_font.size * 2:  # text lines behind (and around) the picture
        draw.text((round(w * 0.04), y), _words(rng, 2, 6), ink, line_font)
        y += round(line_font.size * rng.uniform(1.4, 2.5))
    margin = round(w * 0.03)
    return img, (margin, bar + margin, w - margin, bottom - margin)


def _caption(draw: ImageDraw.ImageDraw, region: Box, rng: random.Random, ink: Color) -> None:
    """Big bold centered words filling a meme caption band."""
    x0, y0, x1, y1 = region
    text = _words(rng, 1, 4).upper()
    size = max(8, round((y1 - y0) * 0.55))
    width = draw.textlength(text, font=font(size, bold=True))
    if width > 0.95 * (x1 - x0):  # long captions get a smaller font, as meme makers do
        size = max(8, math.floor(size * 0.95 * (x1 - x0) / width))
    caption_font = font(size, bold=True)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=caption_font)
    x = x0 + max(0, ((x1 - x0) - (right - left)) // 2) - left
    y = y0 + max(0, ((y1 - y0) - (bottom - top)) // 2) - top
    draw.text((x, y), text, ink, caption_font, stroke_width=2, stroke_fill=(0, 0, 0))


def meme_frame(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, Box]:
    """A white or black frame with caption bands above and/or below; returns the frame and
    the region between the bands."""
    w, h = size
    dark = rng.random() < 0.4
    img = Image.new("RGB", size, (0, 0, 0) if dark else (255, 255, 255))
    draw = ImageDraw.Draw(img)
    ink = (255, 255, 255) if dark else (0, 0, 0)
    top = round(h * rng.uniform(0.12, 0.28)) if rng.random() < 0.8 else 0
    bottom = round(h * rng.uniform(0.1, 0.22)) if top == 0 or rng.random() < 0.4 else 0
    if top:
        _caption(draw, (0, 0, w, top), rng, ink)
    if bottom:
        _caption(draw, (0, h - bottom, w, h), rng, ink)
    margin = round(min(w, h) * rng.uniform(0.0, 0.04))
    return img, (margin, top + margin, w - margin, h - bottom - margin)


def _maybe_crop(img: Image.Image, rng: random.Random) -> Image.Image:
    """Sometimes keep only a part of the source (pasted crops are common)."""
    if rng.random() >= 0.3:
        return img
    fw, fh = rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)
    cw, ch = max(1, round(img.width * fw)), max(1, round(img.height * fh))
    x, y = rng.randint(0, img.width - cw), rng.randint(0, img.height - ch)
    return img.crop((x, y, x + cw, y + ch))


def _prepare_paste(
    paste: Image.Image, region: Box, rng: random.Random, scale: float, params: DatasetParams
) -> tuple[Image.Image, Image.Image, Image.Image]:
    """Resize, border and rotate the paste; returns (rgb, alpha, content mask).

    The content mask marks the pasted pixels without the border: the label is its bounding box.
    """
    rw, rh = region[2] - region[0], region[3] - region[1]
    factor = scale * min(rw / paste.width, rh / paste.height)
    size = (max(2, round(paste.width * factor)), max(2, round(paste.height * factor)))
    rgb = paste.resize(size, Image.Resampling.BILINEAR)
    content = Image.new("L", size, 255)
    if rng.random() < params.border_probability:
        border = max(1, round(max(size) * rng.uniform(0.01, 0.05)))
        fill = rng.choice([(255, 255, 255), (0, 0, 0), _color(rng)])
        rgb = ImageOps.expand(rgb, border=border, fill=fill)
        content = ImageOps.expand(content, border=border, fill=0)
    alpha = Image.new("L", rgb.size, 255)
    if params.max_rotation > 0 and rng.random() < params.rotation_probability:
        angle = rng.uniform(-params.max_rotation, params.max_rotation)
        rgb = rgb.rotate(angle, Image.Resampling.BICUBIC, expand=True)
        alpha = alpha.rotate(angle, Image.Resampling.BICUBIC, expand=True)
        content = content.rotate(angle, Image.Resampling.NEAREST, expand=True)
    shrink = min(1.0, rw / rgb.width, rh / rgb.height)  # rotation or border made it too big
    if shrink < 1.0:
        size = (max(2, math.floor(rgb.width * shrink)), max(2, math.floor(rgb.height * shrink)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
        alpha = alpha.resize(size, Image.Resampling.BILINEAR)
        content = content.resize(size, Image.Resampling.NEAREST)
    return rgb, alpha, content


def _paste_into(
    canvas: Image.Image,
    paste: Image.Image,
    region: Box,
    rng: random.Random,
    scale: float,
    params: DatasetParams,
) -> Box:
    """Paste at a random place of ``region``; returns the content's box in canvas pixels."""
    rgb, alpha, content = _prepare_paste(paste, region, rng, scale, params)
    x0, y0, x1, y1 = (round(v) for v in region)
    x = x0 + rng.randint(0, max(0, x1 - x0 - rgb.width))
    y = y0 + rng.randint(0, max(0, y1 - y0 - rgb.height))
    canvas.paste(rgb, (x, y), alpha)
    bx0, by0, bx1, by1 = content.getbbox()
    return float(x + bx0), float(y + by0), float(x + bx1), float(y + by1)


def _clutter(img: Image.Image, rng: random.Random, params: DatasetParams) -> Image.Image:
    """Words and emoji-like shapes anywhere, the paste included (queries carry them too)."""
    if rng.random() < params.text_probability:
        draw = ImageDraw.Draw(img)
        text_font = font(max(8, round(min(img.size) * rng.uniform(0.05, 0.14))), bold=True)
        text = _words(rng, 1, 3)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=text_font)
        x = rng.randint(0, max(0, img.width - (right - left))) - left
        y = rng.randint(0, max(0, img.height - (bottom - top))) - top
        stroke = rng.choice([0, 1, 2])
        draw.text((x, y), text, _color(rng), text_font, stroke_width=stroke, stroke_fill=(0,) * 3)
    if rng.random() < params.shape_probability:
        img, _ = edit_shapes(img, rng)
    return img


def compose(
    paste: Image.Image | None,
    background: Image.Image | None,
    kind: str,
    rng: random.Random,
    params: DatasetParams,
) -> tuple[Image.Image, Box | None]:
    """Render one training image; returns it and the pasted content's box (None: negative).

    ``kind`` picks the frame: ``photo`` (``background`` scaled to the canvas), ``plain``,
    ``screenshot`` or ``meme``. Without ``paste`` the frame alone is the image, except for a
    ``photo`` negative, where ``background`` fills the frame: a whole photograph is no overlay.
    The random draws depend only on image sizes, never on pixel values.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown overlay kind {kind!r}; expected one of {KINDS}")
    if kind == "photo":
        if background is None:
            raise ValueError("a photo frame needs a background image")
        aspect = background.width / background.height
        size = _canvas_size((min(2.0, max(0.5, aspect)), 1.0), params.image_size)
        canvas, region = _fit(background, size), (0, 0, *size)
    else:
        size = _canvas_size(rng.choice(ASPECTS), params.image_size)
        if kind == "plain":
            canvas, region = plain_frame(rng, size), (0, 0, *size)
        elif kind == "screenshot":
            canvas, region = screenshot_frame(rng, size)
        else:
            canvas, region = meme_frame(rng, size)
    box = None
    if paste is not None:
        low = params.min_scale
        if kind == "meme":  # a meme's picture fills most of its frame
            low = max(low, 0.6 * params.max_scale)
        scale = rng.uniform(low, params.max_scale)
        box = _paste_into(canvas, _maybe_crop(paste, rng), region, rng, scale, params)
    return _clutter(canvas, rng, params), box


# --- Dataset ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """The source images of all shards, sorted by id (then shard): plans index this list.

    Kept as arrays, not one object per image: the training set may hold a million images.
    """

    ids: np.ndarray  # str objects
    shard_index: np.ndarray  # int, into ``shards``
    shards: list[str]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class ImagePlan:
    """What one dataset image is made of (indices into the sorted source list)."""

    split: str
    index: int
    kind: str
    paste: int | None  # None: a negative
    background: int | None  # only for the photo kind


def list_sources(shards: Sequence[str | os.PathLike]) -> Sources:
    """Every image of ``shards``; the order does not depend on the order of the shards."""
    paths = sorted(str(s) for s in shards)
    ids = [np.asarray(read_shard_ids(p), dtype=object) for p in paths]
    if not paths or not sum(len(i) for i in ids):
        raise OverlayDataError(f"no source images in {len(paths)} image shard(s): {paths[:3]}")
    shard_index = np.concatenate([np.full(len(i), k, dtype=np.int32) for k, i in enumerate(ids)])
    all_ids = np.concatenate(ids)
    order = np.lexsort((shard_index, all_ids))  # by id, then by shard
    return Sources(all_ids[order], shard_index[order], paths)


def plan_images(n_sources: int, params: DatasetParams) -> list[ImagePlan]:
    """Choose the frame and source images of every dataset image (few sources are reused)."""
    plans = []
    counts = {"train": params.train_images, "val": params.val_images}
    for split in SPLITS:
        for index in range(counts[split]):
            rng = purpose_rng(params.seed, split, index, "plan")
            kind = rng.choices(KINDS, weights=(0.35, 0.15, 0.25, 0.25))[0]
            negative = rng.random() < params.negative_fraction
            paste = None if negative else rng.randrange(n_sources)
            background = None
            if kind == "photo":
                # Another image than the paste when there is one.
                background = rng.randrange(n_sources)
                if paste is not None and n_sources > 1 and background == paste:
                    background = (background + 1) % n_sources
            plans.append(ImagePlan(split, index, kind, paste, background))
    return plans


def _read_block(sources: Sources, wanted: set[int]) -> dict[int, Image.Image]:
    """Decode the wanted sources, reading each shard once."""
    by_shard: dict[int, list[int]] = {}
    for i in sorted(wanted):
        by_shard.setdefault(int(sources.shard_index[i]), []).append(i)
    images = {}
    for shard, indices in by_shard.items():
        jpegs = read_jpegs(sources.shards[shard], [sources.ids[i] for i in indices])
        for i in indices:
            images[i] = Image.fromarray(decode_rgb(jpegs[sources.ids[i]]))
    return images


def yolo_label(box: Box | None, size: tuple[int, int]) -> str:
    """The label file text of one image: ``0 cx cy w h`` normalized, empty for a negative."""
    if box is None:
        return ""
    w, h = size
    x0, y0, x1, y1 = box
    values = ((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)
    return "0 " + " ".join(f"{v:.6f}" for v in values) + "\n"


def _render_plan(plan: ImagePlan, images: dict[int, Image.Image], params: DatasetParams):
    rng = purpose_rng(params.seed, plan.split, plan.index, "render")
    paste = images[plan.paste] if plan.paste is not None else None
    background = images[plan.background] if plan.background is not None else None
    img, box = compose(paste, background, plan.kind, rng, params)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=rng.randint(60, 95))
    return buf.getvalue(), yolo_label(box, img.size)


def _blocks(plans: list[ImagePlan]) -> Iterator[list[ImagePlan]]:
    for start in range(0, len(plans), BLOCK_SIZE):
        yield plans[start : start + BLOCK_SIZE]


def _write_dataset(
    sources: Sources, stage: Path, final: Path, params: DatasetParams
) -> dict[str, Any]:
    """Render every image into ``stage``; returns the summary."""
    for sub in ("images", "labels"):
        for split in SPLITS:
            (stage / sub / split).mkdir(parents=True)
    plans = plan_images(len(sources), params)
    kinds: Counter[str] = Counter()
    positives: Counter[str] = Counter()
    for block in _blocks(plans):
        wanted = {i for p in block for i in (p.paste, p.background) if i is not None}
        images = _read_block(sources, wanted)
        for plan in block:
            jpeg, label = _render_plan(plan, images, params)
            name = f"{plan.index:06d}"
            (stage / "images" / plan.split / f"{name}.jpg").write_bytes(jpeg)
            (stage / "labels" / plan.split / f"{name}.txt").write_text(label)
            kinds[plan.kind] += 1
            positives[plan.split] += bool(label)
    data = {"path": str(final.resolve()), "train": "images/train", "val": "images/val"}
    data["names"] = {0: CLASS_NAME}
    (stage / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    counts = {"train": params.train_images, "val": params.val_images}
    summary = {
        "images": counts,
        "positives": {s: positives[s] for s in SPLITS},
        "negatives": {s: counts[s] - positives[s] for s in SPLITS},
        "kinds": {k: kinds[k] for k in KINDS},
        "n_sources": len(sources),
        "seed": params.seed,
        "params": asdict(params),
    }
    (stage / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def synthesize_overlay_dataset(
    shards: Sequence[str | os.PathLike], out_dir: str | os.PathLike, params: DatasetParams
) -> dict[str, Any]:
    """Build the YOLO overlay dataset from the images of ``shards`` (see the module docstring).

    The folder is built next to ``out_dir`` and renamed into place only when complete. Same
    sources and parameters give byte-identical files (on the same Pillow/libjpeg build).
    """
    final = Path(out_dir)
    sources = list_sources(shards)
    with atomic_directory(final) as stage:
        summary = _write_dataset(sources, stage, final, params)
    logger.info(
        "overlay dataset %s: %s from %d sources", final, summary["images"], summary["n_sources"]
    )
    return summary
