"""A corpus of bad, odd and hostile inputs, each with the outcome the workflow must give it.

``write_corpus(folder)`` writes one file (or folder, or link) per kind into ``folder`` and
returns the kinds; ``python tests/bad_inputs.py FOLDER`` does the same from a shell. An outcome
is ``ingested`` (the image is in the set's shards) or the reason code of its reject row.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

INGESTED = "ingested"


@dataclass(frozen=True)
class Kind:
    """One kind of input: a description, the file name it gets, how to make it, and the
    outcome expected (``ingested`` or a reject reason code)."""

    description: str
    name: str  # str, or bytes for a name that is not UTF-8
    make: Callable[[Path], None]
    outcome: str


def _photo(size: int = 160, seed: int = 0) -> Image.Image:
    """A textured tile of a scikit-image photograph (no two kinds share one)."""
    photo = skimage.data.astronaut()
    y, x = 20 + 30 * (seed % 8), 20 + 37 * (seed // 8)
    return Image.fromarray(photo[y : y + 200, x : x + 200]).resize((size, size))


def _save(image: Image.Image, **kwargs: object) -> Callable[[Path], None]:
    return lambda path: image.save(path, **kwargs)


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _jpeg(image: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def _png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height: tiny on disk, enormous decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    rows = b"\x00" * ((1 + (width + 7) // 8) * height)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    _photo(seed=7).resize((200, 120)).save(path, format="JPEG", exif=exif)


def _animated(path: Path, fmt: str) -> None:
    frames = [_photo(seed=s) for s in (8, 9)]
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=100)


def _symlink(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def _loop(path: Path) -> None:
    path.symlink_to(path.with_name("loop-b.jpg"))
    path.with_name("loop-b.jpg").symlink_to(path)


def _sixteen_bit(path: Path) -> None:
    gray = np.asarray(_photo(seed=10).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(gray).save(path)


def _float_tiff(path: Path) -> None:
    gray = np.asarray(_photo(seed=11).convert("L"), dtype=np.float32) / 255
    Image.fromarray(gray, mode="F").save(path)


def _palette_alpha(path: Path) -> None:
    image = _photo(seed=12).convert("P", palette=Image.Palette.ADAPTIVE)
    image.info["transparency"] = 0
    image.save(path, transparency=0)


def kinds() -> list[Kind]:
    """Every kind of the corpus (more than 40)."""
    photo_jpeg = _jpeg(_photo(seed=1), quality=90)
    png = io.BytesIO()
    _photo(seed=2).save(png, format="PNG")
    png_bytes = png.getvalue()
    rejected = [
        Kind("zero-byte file", "zero.jpg", _bytes(b""), "empty_file"),
        Kind(
            "truncated JPEG",
            "truncated-jpeg.jpg",
            _bytes(photo_jpeg[: len(photo_jpeg) // 2]),
            "truncated",
        ),
        Kind(
            "truncated PNG",
            "truncated-png.png",
            _bytes(png_bytes[: len(png_bytes) // 2]),
            "truncated",
        ),
        Kind("text file named .jpg", "text.jpg", _bytes(b"just some text\n"), "not_an_image"),
        Kind(
            "HTML named .png", "page.png", _bytes(b"<html><body>hi</body></html>\n"), "not_an_image"
        ),
        Kind(
            "PNG signature then garbage",
            "garbage-png.png",
            _bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4),
            "decode_error",
        ),
        Kind(
            "JPEG signature then garbage",
            "garbage-jpeg.jpg",
            _bytes(b"\xff\xd8\xff\xe0" + bytes(512)),
            "decode_error",
        ),
        Kind(
            "decompression bomb (144 Mpx PNG)",
            "bomb.png",
            _bytes(_png_bomb(12_000, 12_000)),
            "too_many_pixels",
        ),
        Kind(
            "1x1 image", "one-pixel.png", _save(Image.new("RGB", (1, 1), (255, 0, 0))), "too_small"
        ),
        Kind("400x8 sliver", "sliver.png", _save(Image.new("L", (400, 8))), "too_small"),
        Kind(
            "4000x20 strip (3 px tall once stored)",
            "strip.png",
            _save(Image.new("L", (4000, 20), 128)),
            "too_small",
        ),
        Kind("ICO file", "icon.ico", _save(_photo(64, 3)), "unsupported_format"),
        Kind(
            "ICO content named .jpg",
            "icon-named.jpg",
            _save(_photo(64, 3), format="ICO"),
            "unsupported_format",
        ),
        Kind("PDF", "document.pdf", _bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"), "unsupported_format"),
        Kind(
            "HEIC (not supported)",
            "phone.heic",
            _bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64)),
            "unsupported_format",
        ),
        Kind("file without extension", "README", _bytes(b"no extension\n"), "unsupported_format"),
        Kind("text file", "notes.txt", _bytes(b"notes\n"), "unsupported_format"),
        Kind("hidden macOS file", ".DS_Store", _bytes(bytes(64)), "unsupported_format"),
        Kind(
            "name that is not UTF-8", b"latin1-\xe9t\xe9.jpg", _bytes(photo_jpeg), "non_utf8_name"
        ),
        Kind("dangling symlink", "dangling.jpg", _symlink("does-not-exist.jpg"), "unreadable"),
        Kind("symlink to a device", "device.jpg", _symlink("/dev/zero"), "unreadable"),
        Kind("symlink loop", "loop-a.jpg", _loop, "unreadable"),
    ]
    accepted = [
        Kind("plain JPEG", "plain.jpg", _save(_photo(seed=13), quality=90), INGESTED),
        Kind("upper-case extension", "UPPER.JPG", _save(_photo(seed=14), format="JPEG"), INGESTED),
        Kind(".jpe extension", "old-jpe.jpe", _save(_photo(seed=15), format="JPEG"), INGESTED),
        Kind(".jfif extension", "old-jfif.jfif", _save(_photo(seed=16), format="JPEG"), INGESTED),
        Kind("PNG named .jpg", "png-named.jpg", _save(_photo(seed=17), format="PNG"), INGESTED),
        Kind(
            "progressive JPEG",
            "progressive.jpg",
            _save(_photo(seed=18), format="JPEG", progressive=True),
            INGESTED,
        ),
        Kind(
            "JPEG with trailing bytes",
            "trailing.jpg",
            _bytes(_jpeg(_photo(seed=19)) + b"junk" * 50),
            INGESTED,
        ),
        Kind(
            "CMYK JPEG", "cmyk.jpg", _save(_photo(seed=20).convert("CMYK"), format="JPEG"), INGESTED
        ),
        Kind(
            "grayscale JPEG",
            "gray.jpg",
            _save(_photo(seed=21).convert("L"), format="JPEG"),
            INGESTED,
        ),
        Kind("16-bit grayscale PNG", "gray16.png", _sixteen_bit, INGESTED),
        Kind("float32 TIFF", "float.tif", _float_tiff, INGESTED),
        Kind("palette PNG with transparency", "palette.png", _palette_alpha, INGESTED),
        Kind("RGBA PNG", "rgba.png", _save(_photo(seed=22).convert("RGBA")), INGESTED),
        Kind("EXIF-rotated JPEG", "rotated.jpg", _exif_rotated, INGESTED),
        Kind("animated GIF", "animated-gif.gif", lambda p: _animated(p, "GIF"), INGESTED),
        Kind("animated WebP", "animated-webp.webp", lambda p: _animated(p, "WEBP"), INGESTED),
        Kind("TIFF", "photo-tiff.tiff", _save(_photo(seed=23), format="TIFF"), INGESTED),
        Kind("BMP", "photo-bmp.bmp", _save(_photo(seed=24), format="BMP"), INGESTED),
        Kind(
            "shell command in the name",
            "$(touch PWNED).jpg",
            _save(_photo(seed=25), format="JPEG"),
            INGESTED,
        ),
        Kind(
            "quotes in the name",
            'it\'s "quoted".jpg',
            _save(_photo(seed=26), format="JPEG"),
            INGESTED,
        ),
        Kind(
            "HTML in the name",
            "<img src=x onerror=alert(1)>.jpg",
            _save(_photo(seed=27), format="JPEG"),
            INGESTED,
        ),
        Kind(
            "newline in the name", "new\nline.jpg", _save(_photo(seed=28), format="JPEG"), INGESTED
        ),
        Kind(
            "leading dash in the name", "-rf.jpg", _save(_photo(seed=29), format="JPEG"), INGESTED
        ),
        Kind("non-ASCII name", "ü ñ 漢字.png", _save(_photo(seed=30)), INGESTED),
        Kind(
            "image in a nested folder",
            "deep/er/nested.jpg",
            _save(_photo(seed=31), format="JPEG"),
            INGESTED,
        ),
        Kind(
            "folder named like an image", "folder.jpg/inside.png", _save(_photo(seed=32)), INGESTED
        ),
    ]
    return rejected + accepted


def corpus_path(folder: Path, kind: Kind) -> Path:
    name = kind.name if isinstance(kind.name, str) else os.fsdecode(kind.name)
    return folder / name


def write_corpus(folder: Path) -> list[Kind]:
    """Write every kind into ``folder`` (created); returns the kinds."""
    folder.mkdir(parents=True, exist_ok=True)
    written = kinds()
    for kind in written:
        path = corpus_path(folder, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        kind.make(path)
    return written


if __name__ == "__main__":
    for kind in write_corpus(Path(sys.argv[1])):
        print(f"{kind.outcome:>18}  {kind.description}")
