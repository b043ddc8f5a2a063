"""Image ingest: decode any accepted image, normalize it to a bounded RGB JPEG, or reject it.

One shard job reads its images one at a time (peak memory is one decoded image plus the small
re-encoded JPEGs of the shard), writes the image shard with :func:`write_image_shard` and a
rejects table ``id,path,reason`` where ``reason`` is ``"<code>: <detail>"`` and ``code`` is one
of :data:`REASON_CODES`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import stat
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Literal

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from copydetect.atomic import atomic_path
from copydetect.inputs import IMAGE_EXTENSIONS
from copydetect.params import config_params
from copydetect.progress import Progress
from copydetect.shards import ImageRecord, write_image_shard

logger = logging.getLogger(__name__)

# Reject reason codes: a fixed vocabulary so rejects tables can be counted and compared.
EMPTY_FILE = "empty_file"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated"
TOO_MANY_PIXELS = "too_many_pixels"
TOO_SMALL = "too_small"
UNREADABLE = "unreadable"
UNSUPPORTED_FORMAT = "unsupported_format"
DECODE_ERROR = "decode_error"
REASON_CODES = (
    EMPTY_FILE,
    NOT_AN_IMAGE,
    TRUNCATED,
    TOO_MANY_PIXELS,
    TOO_SMALL,
    UNREADABLE,
    UNSUPPORTED_FORMAT,
    DECODE_ERROR,
)

# The extensions a folder listing takes (copydetect.inputs) are the ones ingest accepts.
ACCEPTED_EXTENSIONS = IMAGE_EXTENSIONS
# Formats as Pillow names them after identifying the content (the extension may lie: a PNG
# named .jpg is accepted). MPO is what Pillow calls many camera JPEGs.
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF"})
# Signatures of accepted formats, to tell "corrupt image" from "not an image at all".
_MAGIC = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
# Same table as ImageOps.exif_transpose; we apply it ourselves after resizing (see _decode).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Explicit so the output does not depend on Pillow defaults or on the source's sampling.
_JPEG_SUBSAMPLING = "4:2:0"
# reduce() by an integer factor first, leaving at least this factor to LANCZOS: near-identical
# output, much faster on large non-JPEG inputs (JPEGs are already shrunk by draft()).
_REDUCING_GAP = 3.0

OnError = Literal["skip", "fail"]


@config_params("ingest", read_elsewhere=("on_error",))
class IngestParams:
    """How images are normalized and which ones are rejected (the ``ingest`` section; its
    ``on_error`` is an argument of :func:`ingest_shard`)."""

    max_side: int  # longest side of the stored image (never upscaled)
    max_pixels: int  # header width*height above this is a decompression bomb
    min_side: int  # a shorter side than this is rejected as too small
    jpeg_quality: int


@dataclass(frozen=True)
class Reject:
    """One row of a rejects table."""

    id: str
    path: str
    reason: str  # "<code>: <detail>"


@dataclass
class IngestSummary:
    """Counts of one shard's ingest."""

    n_ok: int
    n_rejected: int
    reasons: dict[str, int] = field(default_factory=dict)  # reason code -> count

    def describe(self) -> str:
        """One line for logs: ``ingested N images, rejected M (code=k, ...)``."""
        counts = ", ".join(f"{code}={n}" for code, n in sorted(self.reasons.items()))
        return f"ingested {self.n_ok} images, rejected {self.n_rejected} ({counts or 'none'})"


class IngestError(Exception):
    """An image could not be ingested, or a shard was aborted because of one."""


class RejectedImage(IngestError):
    """An image was rejected; ``code`` is one of :data:`REASON_CODES`."""

    def __init__(self, path: str, code: str, detail: str) -> None:
        assert code in REASON_CODES, code
        self.path, self.code, self.detail = path, code, detail
        super().__init__(f"cannot ingest {path!r}: {self.reason}")

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


class _Bad(Exception):
    """Internal: a classified failure whose path is attached by :func:`load_image`."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


def load_image(
    path: str | os.PathLike, params: IngestParams | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode one image to RGB with its longest side <= ``params.max_side``.

    Returns the image and the original ``(width, height)`` as displayed (after EXIF orientation).
    Raises :class:`RejectedImage` with a code from :data:`REASON_CODES` for any failure.
    """
    params = params or IngestParams()
    path = os.fspath(path)
    try:
        _check_path(path)
        with _pillow_limits(params.max_pixels), open(path, "rb") as fh:
            im = _identify(fh, params)
            return _decode(im, params.max_side)
    except Exception as exc:  # every failure becomes a classified reject, never a traceback
        code, detail = _classify(exc)
        raise RejectedImage(path, code, detail) from None


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """Encode an RGB image as a baseline JPEG, without metadata (same pixels -> same bytes)."""
    buf = io.BytesIO()
    image.save(
        buf,
        format="JPEG",
        quality=quality,
        subsampling=_JPEG_SUBSAMPLING,
        optimize=False,
        progressive=False,
    )
    return buf.getvalue()


def ingest_image(
    image_id: str, path: str | os.PathLike, params: IngestParams | None = None
) -> ImageRecord:
    """Load, normalize and re-encode one image; raises :class:`RejectedImage`."""
    image, orig_size = load_image(path, params)
    try:
        jpeg = encode_jpeg(image, params.jpeg_quality)
    except Exception as exc:
        raise RejectedImage(os.fspath(path), DECODE_ERROR, _one_line(exc)) from None
    return ImageRecord(image_id, jpeg, orig_size)


def ingest_shard(
    items: Sequence[tuple[str, str]],
    out_h5: str | os.PathLike,
    rejects_csv: str | os.PathLike,
    params: IngestParams | None = None,
    on_error: OnError = "skip",
) -> IngestSummary:
    """Ingest ``(id, path)`` items in order into an image shard and a rejects table.

    ``on_error="skip"`` logs and tables every rejected image; ``"fail"`` raises
    :class:`IngestError` naming the first rejected file and writes nothing.
    """
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    params = params or IngestParams()
    records: list[ImageRecord] = []
    rejects: list[Reject] = []
    progress = Progress(len(items), "images", log=logger)
    for image_id, path in items:
        try:
            records.append(ingest_image(image_id, path, params))
        except RejectedImage as exc:
            if on_error == "fail":
                raise IngestError(
                    f"image {image_id!r} at {exc.path!r} rejected: {exc.reason} "
                    "(ingest.on_error is 'fail'; set it to 'skip' to table rejects instead)"
                ) from None
            logger.warning("rejected %s (%r): %s", image_id, exc.path, exc.reason)
            rejects.append(Reject(image_id, exc.path, exc.reason))
        progress.advance()
    progress.done()
    # The rejects table is renamed into place only after the shard has been, so a failure while
    # writing the shard leaves neither file behind.
    with atomic_path(rejects_csv) as tmp:
        _write_rejects(tmp, rejects)
        write_image_shard(out_h5, records)
    reasons = Counter(r.reason.split(":", 1)[0] for r in rejects)
    return IngestSummary(len(records), len(rejects), dict(sorted(reasons.items())))


def read_rejects(path: str | os.PathLike) -> list[Reject]:
    """Read a rejects table written by :func:`ingest_shard`."""
    with open(path, newline="", encoding="utf-8") as f:
        return [Reject(row["id"], row["path"], row["reason"]) for row in csv.DictReader(f)]


def _write_rejects(path: os.PathLike, rejects: Sequence[Reject]) -> None:
    # csv quoting keeps paths with commas, quotes or newlines intact; backslashreplace keeps the
    # table valid UTF-8 even for paths with undecodable bytes (surrogate escapes).
    with open(path, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "path", "reason"])
        writer.writerows([r.id, r.path, r.reason] for r in rejects)


def _check_path(path: str) -> None:
    """Reject by extension and by what the file system says, before reading a byte."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in ACCEPTED_EXTENSIONS:
        raise _Bad(UNSUPPORTED_FORMAT, f"extension {ext or '(none)'!r} is not accepted")
    st = os.stat(path)  # a missing file or dangling symlink raises OSError -> unreadable
    if not stat.S_ISREG(st.st_mode):
        raise _Bad(UNREADABLE, "not a regular file")
    if st.st_size == 0:
        raise _Bad(EMPTY_FILE, "file has 0 bytes")


@contextlib.contextmanager
def _pillow_limits(max_pixels: int) -> Iterator[None]:
    """Set Pillow's process-wide safety switches for one image, then restore them.

    Pillow's own bomb check inside decoders (GIF frames, TIFF tiles ...) uses our limit and
    raises instead of warning, so it is classified like our header check; truncated files must
    fail rather than decode with their missing part filled in.
    """
    with (
        _swapped(Image, "MAX_IMAGE_PIXELS", max_pixels),
        _swapped(ImageFile, "LOAD_TRUNCATED_IMAGES", False),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


@contextlib.contextmanager
def _swapped(module: object, name: str, value: object) -> Iterator[None]:
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def _identify(fh: IO[bytes], params: IngestParams) -> ImageFile.ImageFile:
    """Open lazily (header only) and apply every check that needs no pixel data."""
    try:
        # Pillow's check at open would pre-empt ours (below) with a message quoting twice the
        # limit; opening only parses the header, so no pixels are allocated either way.
        with _swapped(Image, "MAX_IMAGE_PIXELS", None):
            im = Image.open(fh)
    except UnidentifiedImageError:
        fh.seek(0)
        head = fh.read(16)
        fmt = _sniff(head)
        if fmt is not None:
            raise _Bad(DECODE_ERROR, f"starts like {fmt} but its header cannot be read") from None
        raise _Bad(NOT_AN_IMAGE, f"unrecognized content, starts with {head[:8]!r}") from None
    if im.format not in ACCEPTED_FORMATS:
        raise _Bad(UNSUPPORTED_FORMAT, f"{im.format} images are not accepted")
    width, height = im.size
    if width * height > params.max_pixels:
        raise _Bad(TOO_MANY_PIXELS, f"{width}x{height} exceeds max_pixels={params.max_pixels}")
    if min(width, height) < params.min_side:
        raise _Bad(TOO_SMALL, f"{width}x{height} has a side below min_side={params.min_side}")
    # Checked on the stored size too: a 4000x20 strip stored at 512x3 has no keypoints left.
    stored = _target_size(width, height, params.max_side)
    if min(stored) < params.min_side:
        raise _Bad(
            TOO_SMALL,
            f"{width}x{height} would be stored at {stored[0]}x{stored[1]}, "
            f"a side below min_side={params.min_side}",
        )
    return im


def _sniff(head: bytes) -> str | None:
    """The accepted format whose signature ``head`` starts with, if any."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC.items() if head.startswith(magic)), None)


def _decode(im: ImageFile.ImageFile, max_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """Decode the first frame, convert to RGB, shrink, then apply the EXIF orientation.

    Orientation is applied last so that it rotates the small image, and so that the draft box
    (in stored orientation) stays valid for the resize. Returns the image and the displayed
    size of the original.
    """
    width, height = im.size
    target = _target_size(width, height, max_side)
    box = _draft(im, target)
    im.load()  # the full decode: truncation and decoder errors surface here
    orientation = _exif_orientation(im)  # after load: a PNG's eXIf chunk may follow its pixels
    small = _resize(_to_rgb(im), target, box)
    method = _ORIENTATION.get(orientation)
    if method is None:
        return small, (width, height)
    displayed = (height, width) if orientation >= 5 else (width, height)  # 5-8 swap the axes
    return small.transpose(method), displayed


def _exif_orientation(im: Image.Image) -> int:
    """EXIF orientation 1-8 (JPEG, PNG, WebP and TIFF tags alike); 1 when absent or malformed."""
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as exc:  # broken metadata must not cost us the pixels
        logger.debug("ignoring unreadable EXIF: %s", _one_line(exc))
        return 1
    return value if isinstance(value, int) and value in _ORIENTATION else 1


def _target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Size with the longest side at most ``max_side`` and the aspect ratio kept; no upscaling."""
    scale = max_side / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _draft(im: Image.Image, target: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale while the result stays >= ``target``.

    Most of a large JPEG's decode time is the full-size IDCT, so this is ingest's biggest
    speedup. Returns the region of the reduced image that maps onto the original (libjpeg rounds
    sizes up), for the resize; None when nothing was reduced. A no-op for other formats.
    """
    if target == im.size:
        return None
    result = im.draft(None, target)
    return None if result is None else result[1]


def _resize(
    im: Image.Image, target: tuple[int, int], box: tuple[float, float, float, float] | None
) -> Image.Image:
    if im.size == target and (box is None or box == (0, 0, *target)):
        return im
    return im.resize(target, Image.Resampling.LANCZOS, box=box, reducing_gap=_REDUCING_GAP)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB; transparency is composited onto white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_to_gray(im).convert("RGB")
    try:
        if im.has_transparency_data:  # alpha band, or a tRNS/GIF transparent palette entry
            return _flatten_on_white(im.convert("RGBA"))
        return im.convert("RGB")  # 1, L, P, CMYK (incl. Adobe-inverted), YCbCr, RGBX ...
    except ValueError as exc:  # e.g. LAB or HSV: Pillow has no conversion to RGB
        raise _Bad(UNSUPPORTED_FORMAT, f"color mode {im.mode}: {exc}") from None


def _flatten_on_white(rgba: Image.Image) -> Image.Image:
    # Transparent pixels often hold arbitrary (usually black) RGB; white is what viewers show.
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_to_gray(im: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer or float gray to 8 bits (rescale, never clip).

    ``I;16*`` maps 0..65535 onto 0..255. Mode ``I`` holding values within 0..65535 is taken as
    16-bit data (how Pillow and TIFF usually carry it); other ``I`` and ``F`` data within 0..1
    (float) is scaled by 255, anything else is stretched from its min..max.
    """
    a = np.nan_to_num(np.asarray(im, dtype=np.float32))
    lo, hi = float(a.min()), float(a.max())
    if im.mode.startswith("I;16") or (im.mode == "I" and lo >= 0 and hi <= 65535):
        scaled = a / np.float32(257)  # 65535 / 257 == 255 exactly
    elif im.mode == "F" and lo >= 0 and hi <= 1:
        scaled = a * np.float32(255)
    else:
        scaled = (a - lo) * np.float32(255 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def _classify(exc: Exception) -> tuple[str, str]:
    """Map any failure while loading an image to ``(reason code, one-line detail)``."""
    if isinstance(exc, _Bad):
        return exc.code, exc.detail
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return TOO_MANY_PIXELS, _one_line(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        # A real I/O error carries an errno; Pillow's decode failures are OSErrors without one.
        return UNREADABLE, _one_line(exc.strerror or exc)
    if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
        return TRUNCATED, _one_line(exc) or "unexpected end of file"
    return DECODE_ERROR, _one_line(f"{type(exc).__name__}: {exc}")


def _one_line(text: object, limit: int = 300) -> str:
    """Collapse whitespace so a reason always fits one log line and one CSV cell."""
    return " ".join(str(text).split())[:limit]
