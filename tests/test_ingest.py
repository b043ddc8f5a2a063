"""Tests of copydetect.ingest and the ingest_shard rule script.

Every bad image is built inside the test (tmp_path). Tests run as root here, so "permission
denied" is simulated by patching ``open``; a dangling symlink and a directory named ``*.jpg``
cover the real file-system cases of ``unreadable``.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import logging
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageFile, features

from copydetect.ingest import (
    REASON_CODES,
    IngestError,
    IngestParams,
    RejectedImage,
    ingest_image,
    ingest_shard,
    load_image,
    read_rejects,
)
from copydetect.shards import decode_rgb, iter_image_records

ROOT = Path(__file__).resolve().parents[1]
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


# --------------------------------------------------------------------------- helpers


def save(path: Path, image: Image.Image | np.ndarray, **kwargs: object) -> Path:
    """Save an image (array or PIL) to ``path``; the format comes from kwargs or the suffix."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, **kwargs)
    return path


def jpeg_bytes(array: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit PNG of ``width x height`` black pixels: tiny on disk, huge decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"\x00" * ((1 + (width + 7) // 8) * height)  # filter byte + packed bits per row
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    png += chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def pixel(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in image.convert("RGB").getpixel((x, y)))


def close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 0) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def halves(width: int, height: int, left: tuple, right: tuple, mode: str = "RGB") -> Image.Image:
    """An image whose left half is ``left`` and right half is ``right``."""
    image = Image.new(mode, (width, height), left)
    image.paste(right, (width // 2, 0, width, height))
    return image


# --------------------------------------------------------------------------- corpus


@pytest.fixture(scope="module")
def photo_jpeg() -> bytes:
    return jpeg_bytes(skimage.data.astronaut())


@pytest.fixture(scope="module")
def good_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("good")
    return {
        "astronaut": save(d / "astronaut.jpg", skimage.data.astronaut(), quality=95),
        "coffee": save(d / "coffee.png", skimage.data.coffee()),
        "chelsea": save(d / "chelsea.jpeg", skimage.data.chelsea(), quality=90),
    }


@pytest.fixture(scope="module")
def bad_images(
    tmp_path_factory: pytest.TempPathFactory, photo_jpeg: bytes
) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected reason code); built once, never modified by a test."""
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes(photo_jpeg[: len(photo_jpeg) // 2])
    png = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).save(png, format="PNG")
    (d / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (d / "text.jpg").write_text("this is not a picture, just text named like one\n")
    png_bomb(d / "bomb.png", 12_000, 12_000)  # 144 Mpx > the default max_pixels
    (d / "dangling.jpg").symlink_to(d / "does-not-exist.jpg")
    (d / "directory.jpg").mkdir()
    save(d / "icon.ico", skimage.data.astronaut()[:64, :64])
    save(d / "icon-named.jpg", skimage.data.astronaut()[:64, :64], format="ICO")
    (d / "document.pdf").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    save(d / "one-pixel.png", Image.new("RGB", (1, 1), RED))
    save(d / "thin.png", Image.new("L", (400, 8)))
    # Wide enough at full size, but stored at 512x3 (max_side 512): nothing left to describe.
    save(d / "strip.png", Image.new("L", (4000, 20)))
    (d / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    expected = {
        "empty.jpg": "empty_file",
        "truncated.jpg": "truncated",
        "truncated.png": "truncated",
        "text.jpg": "not_an_image",
        "bomb.png": "too_many_pixels",
        "dangling.jpg": "unreadable",
        "directory.jpg": "unreadable",
        "icon.ico": "unsupported_format",
        "icon-named.jpg": "unsupported_format",
        "document.pdf": "unsupported_format",
        "one-pixel.png": "too_small",
        "thin.png": "too_small",
        "strip.png": "too_small",
        "garbage.png": "decode_error",
    }
    return {name: (d / name, code) for name, code in expected.items()}


BAD_NAMES = [
    "empty.jpg",
    "truncated.jpg",
    "truncated.png",
    "text.jpg",
    "bomb.png",
    "dangling.jpg",
    "directory.jpg",
    "icon.ico",
    "icon-named.jpg",
    "document.pdf",
    "one-pixel.png",
    "thin.png",
    "strip.png",
    "garbage.png",
]


# --------------------------------------------------------------------------- rejects


@pytest.mark.parametrize("name", BAD_NAMES)
def test_each_bad_image_is_rejected_with_its_code(bad_images, name):
    path, code = bad_images[name]
    with pytest.raises(RejectedImage) as info:
        load_image(path)
    assert info.value.code == code
    assert info.value.reason.startswith(f"{code}: ") and "\n" not in info.value.reason
    assert str(path) in str(info.value)


def test_every_reason_code_is_covered(bad_images):
    codes = {code for _, code in bad_images.values()}
    assert codes == set(REASON_CODES)


def test_permission_denied_is_unreadable(good_images, monkeypatch):
    # Root can read a chmod-000 file, so simulate the kernel's answer at open().
    target = str(good_images["astronaut"])
    real_open = builtins.open

    def deny(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == target:
            raise PermissionError(errno.EACCES, "Permission denied", target)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(RejectedImage) as info:
        load_image(target)
    assert info.value.reason == "unreadable: Permission denied"


def test_lowered_max_pixels_rejects_before_decoding(good_images):
    with pytest.raises(RejectedImage) as info:
        load_image(good_images["astronaut"], IngestParams(max_pixels=100_000))
    assert info.value.code == "too_many_pixels"
    assert "512x512" in info.value.detail


def test_truncated_is_rejected_even_if_pillow_was_told_to_load_truncated(bad_images, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RejectedImage, match="truncated"):
        load_image(bad_images["truncated.jpg"][0])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for the rest of the process
    assert IngestParams().max_pixels == Image.MAX_IMAGE_PIXELS


def test_shard_keeps_good_images_and_tables_bad_ones(tmp_path, good_images, bad_images, caplog):
    items = [(f"g_{k}", str(p)) for k, p in good_images.items()]
    items += [(f"b_{name}", str(p)) for name, (p, _) in bad_images.items()]
    out, rejects_csv = tmp_path / "out" / "s.h5", tmp_path / "out" / "s.rejects.csv"
    with caplog.at_level(logging.WARNING, logger="copydetect.ingest"):
        summary = ingest_shard(items, out, rejects_csv)

    records = list(iter_image_records(out))
    assert [r.id for r in records] == [f"g_{k}" for k in good_images]
    assert records[0].orig_size == (512, 512)
    assert records[1].orig_size == (600, 400)  # coffee is 400 rows x 600 columns
    assert decode_rgb(records[2].jpeg).shape == (300, 451, 3)  # chelsea: not upscaled
    rejects = read_rejects(rejects_csv)
    assert [r.id for r in rejects] == [f"b_{name}" for name in bad_images]
    assert {r.id: r.reason.split(":")[0] for r in rejects} == {
        f"b_{name}": code for name, (_, code) in bad_images.items()
    }
    assert summary.n_ok == 3 and summary.n_rejected == len(bad_images)
    assert summary.reasons["unsupported_format"] == 3 and sum(summary.reasons.values()) == 14
    assert summary.describe().startswith("ingested 3 images, rejected 14 (decode_error=1, ")
    rejected_logs = [r for r in caplog.records if r.getMessage().startswith("rejected ")]
    assert len(rejected_logs) == len(bad_images)
    assert all(r.exc_info is None for r in caplog.records)  # a log line, never a traceback


def test_all_rejected_shard_is_valid_and_empty(tmp_path, bad_images):
    path, _ = bad_images["text.jpg"]
    summary = ingest_shard([("x", str(path))], tmp_path / "s.h5", tmp_path / "s.csv")
    assert (summary.n_ok, summary.n_rejected) == (0, 1)
    assert list(iter_image_records(tmp_path / "s.h5")) == []


# --------------------------------------------------------------------------- color modes


def test_rgba_transparent_pixels_become_white(tmp_path):
    rgba = halves(64, 32, (0, 0, 0, 0), (255, 0, 0, 255), mode="RGBA")
    image, _ = load_image(save(tmp_path / "a.png", rgba))
    assert image.mode == "RGB"
    assert pixel(image, 5, 5) == WHITE and pixel(image, 60, 5) == RED


def test_half_transparent_pixels_are_blended_onto_white(tmp_path):
    image, _ = load_image(save(tmp_path / "a.png", Image.new("RGBA", (32, 32), (0, 0, 0, 128))))
    assert close(pixel(image, 3, 3), (127, 127, 127), tol=1)


def test_la_transparent_becomes_white(tmp_path):
    la = halves(64, 32, (0, 0), (0, 255), mode="LA")
    image, _ = load_image(save(tmp_path / "la.png", la))
    assert pixel(image, 5, 5) == WHITE and pixel(image, 60, 5) == (0, 0, 0)


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_with_transparent_index(tmp_path, suffix):
    indices = np.zeros((32, 64), dtype=np.uint8)
    indices[:, 32:] = 1
    palette = Image.fromarray(indices, mode="L").convert("P")
    palette.putpalette([10, 20, 30, 255, 0, 0] + [0] * 762)
    image, _ = load_image(save(tmp_path / f"p{suffix}", palette, transparency=0))
    assert pixel(image, 5, 5) == WHITE and pixel(image, 60, 5) == RED


def test_palette_without_transparency(tmp_path):
    image, _ = load_image(save(tmp_path / "p.png", Image.new("RGB", (32, 32), BLUE).convert("P")))
    assert pixel(image, 3, 3) == BLUE


@pytest.mark.parametrize("mode,value", [("L", 77), ("1", 255), ("1", 0)])
def test_gray_and_bilevel(tmp_path, mode, value):
    image, _ = load_image(save(tmp_path / "g.png", Image.new(mode, (32, 32), value)))
    assert image.mode == "RGB" and pixel(image, 3, 3) == (value, value, value)


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk(tmp_path, suffix):
    cmyk = halves(64, 32, (255, 0, 0, 0), (0, 0, 0, 255), mode="CMYK")  # cyan | black
    image, _ = load_image(save(tmp_path / f"c{suffix}", cmyk))
    assert close(pixel(image, 5, 5), (0, 255, 255), tol=3)
    assert close(pixel(image, 60, 5), (0, 0, 0), tol=3)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_gray_is_rescaled_not_clipped(tmp_path, suffix):
    values = np.zeros((32, 96), dtype=np.uint16)
    values[:, 32:64], values[:, 64:] = 128 * 257, 65535
    image, _ = load_image(save(tmp_path / f"g16{suffix}", values))
    assert Image.open(tmp_path / f"g16{suffix}").mode.startswith("I;16")
    assert [pixel(image, x, 5) for x in (5, 40, 80)] == [(0,) * 3, (128,) * 3, (255,) * 3]


def test_32_bit_int_gray_in_16_bit_range(tmp_path):
    values = np.zeros((32, 64), dtype=np.int32)
    values[:, 32:] = 65535
    image, _ = load_image(save(tmp_path / "i32.tif", values))
    assert pixel(image, 5, 5) == (0, 0, 0) and pixel(image, 60, 5) == WHITE


@pytest.mark.parametrize("high,expected", [(1.0, 255), (1000.0, 255), (0.5, 128)])
def test_float_gray(tmp_path, high, expected):
    values = np.zeros((32, 64), dtype=np.float32)
    values[:, 32:] = high
    image, _ = load_image(save(tmp_path / "f.tif", values))
    assert pixel(image, 5, 5) == (0, 0, 0) and pixel(image, 60, 5) == (expected,) * 3


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_6_rotates(tmp_path, suffix):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise for display
    stored = halves(64, 32, RED, BLUE)
    image, orig_size = load_image(save(tmp_path / f"o{suffix}", stored, exif=exif))
    assert image.size == (32, 64) and orig_size == (32, 64)
    assert close(pixel(image, 16, 8), RED, tol=8) and close(pixel(image, 16, 56), BLUE, tol=8)


def test_exif_orientation_with_downscale(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise
    stored = halves(2000, 1000, RED, BLUE)
    image, orig_size = load_image(save(tmp_path / "o.jpg", stored, exif=exif, quality=95))
    assert image.size == (256, 512) and orig_size == (1000, 2000)
    assert close(pixel(image, 128, 480), RED, tol=8) and close(pixel(image, 128, 30), BLUE, tol=8)


def test_animated_gif_takes_first_frame(tmp_path):
    frames = [Image.new("RGB", (32, 32), c) for c in (RED, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    image, _ = load_image(path)
    assert pixel(image, 3, 3) == RED


def test_multipage_tiff_takes_first_page(tmp_path):
    pages = [Image.new("RGB", (32, 32), c) for c in (BLUE, RED)]
    path = tmp_path / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert pixel(load_image(path)[0], 3, 3) == BLUE


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_animated_webp_takes_first_frame(tmp_path):
    frames = [Image.new("RGB", (32, 32), c) for c in (RED, BLUE)]
    path = tmp_path / "anim.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    assert pixel(load_image(path)[0], 3, 3) == RED


# --------------------------------------------------------------------------- resizing, encoding


@pytest.mark.parametrize(
    "size,max_side,expected",
    [((1200, 800), 512, (512, 341)), ((800, 1200), 512, (341, 512)), ((300, 200), 512, (300, 200))],
)
def test_longest_side_is_bounded_and_never_upscaled(tmp_path, size, max_side, expected):
    photo = Image.fromarray(skimage.data.coffee()).resize(size)
    for suffix in (".jpg", ".png"):
        image, orig_size = load_image(save(tmp_path / f"x{suffix}", photo), IngestParams(max_side))
        assert image.size == expected and orig_size == size


def test_jpeg_draft_decode_matches_full_decode_resize(tmp_path):
    # Downscale-on-decode (draft) must not visibly change the result vs a full-size LANCZOS.
    big = Image.fromarray(skimage.data.astronaut()).resize((2048, 2048), Image.Resampling.BICUBIC)
    path = save(tmp_path / "big.jpg", big, quality=95)
    fast, _ = load_image(path)
    reference = Image.open(path).convert("RGB").resize((512, 512), Image.Resampling.LANCZOS)
    diff = np.abs(np.asarray(fast, dtype=float) - np.asarray(reference, dtype=float))
    assert fast.size == (512, 512) and diff.mean() < 2.0


def test_encoded_jpeg_is_deterministic_and_rgb(good_images):
    params = IngestParams(max_side=200, jpeg_quality=80)
    first = ingest_image("a", good_images["coffee"], params)
    second = ingest_image("a", good_images["coffee"], params)
    assert first == second
    with Image.open(io.BytesIO(first.jpeg)) as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (200, 133))
        assert "exif" not in im.info and "icc_profile" not in im.info


def test_params_validation_and_from_mapping():
    config = {"max_side": 256, "min_side": 8, "jpeg_quality": 85, "on_error": "skip"}
    assert IngestParams.from_mapping(config) == IngestParams(256, 89_478_485, 8, 85)
    with pytest.raises(ValueError):
        IngestParams(jpeg_quality=0)
    with pytest.raises(ValueError):
        IngestParams(max_side=0)


# --------------------------------------------------------------------------- file names


ODD_NAMES = [
    "with space.jpg",
    'quote\'s "double".jpg',
    "ünïcödé 画像.jpg",
    "-leading-dash.jpg",
    "comma,semi;colon.jpg",
    "new\nline.jpg",
]


def test_odd_file_names_are_ingested_and_tabled(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    photo = skimage.data.chelsea()
    items = [(f"g{i}", str(save(good / n, photo, format="JPEG"))) for i, n in enumerate(ODD_NAMES)]
    for i, name in enumerate(ODD_NAMES):
        (bad / name).write_text("not an image")
        items.append((f"b{i}", str(bad / name)))
    summary = ingest_shard(items, tmp_path / "s.h5", tmp_path / "s.csv")
    assert (summary.n_ok, summary.n_rejected) == (len(ODD_NAMES), len(ODD_NAMES))
    rejects = read_rejects(tmp_path / "s.csv")
    assert [r.path for r in rejects] == [str(bad / n) for n in ODD_NAMES]
    assert all(r.reason.startswith("not_an_image: ") for r in rejects)


# --------------------------------------------------------------------------- failure modes


def test_on_error_fail_names_the_file_and_writes_nothing(tmp_path, good_images, bad_images):
    out = tmp_path / "out"
    out.mkdir()
    bad_path = bad_images["truncated.jpg"][0]
    items = [("a", str(good_images["astronaut"])), ("b", str(bad_path))]
    items.append(("c", str(good_images["coffee"])))
    with pytest.raises(IngestError) as info:
        ingest_shard(items, out / "s.h5", out / "s.csv", on_error="fail")
    assert str(bad_path) in str(info.value) and "truncated: " in str(info.value)
    assert list(out.iterdir()) == []


def test_failure_while_writing_leaves_no_file(tmp_path, good_images, bad_images, monkeypatch):
    real_create = h5py.Group.create_dataset

    def create_then_crash(self, name, *args, **kwargs):
        if name == "orig_size":  # after ids and all JPEG bytes were written
            raise OSError("disk full (simulated)")
        return real_create(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_then_crash)
    items = [("a", str(good_images["astronaut"])), ("b", str(bad_images["text.jpg"][0]))]
    out = tmp_path / "out"
    with pytest.raises(OSError, match="simulated"):
        ingest_shard(items, out / "s.h5", out / "s.rejects.csv")
    assert list(out.iterdir()) == []  # neither final files nor temporaries


# --------------------------------------------------------------------------- rule script

_DRIVER = """
import json, runpy, sys, types
a = json.loads(sys.argv[2])
ns = types.SimpleNamespace
snakemake = ns(
    input=ns(),
    params=ns(
        images=a["images"], ingest=a["ingest"], development_shard=a.get("development_shard", {})
    ),
    wildcards=ns(set="queries"),
    output=ns(shard=a["shard"], rejects=a["rejects"]),
    log=[a["log"]],
    threads=1,
    resources={},
)
runpy.run_path(sys.argv[1], init_globals={"snakemake": snakemake}, run_name="__main__")
"""


def run_script(
    tmp_path: Path, images: list[Path], on_error: str, development_shard: dict | None = None
) -> tuple[int, str]:
    """Run workflow_scripts/ingest_shard.py as Snakemake would, with a stand-in object."""
    args = {
        "images": [[f"id{i}", str(p), "fingerprint"] for i, p in enumerate(images)],
        "development_shard": development_shard or {},
        "ingest": {
            "max_side": 128,
            "max_pixels": 10**8,
            "min_side": 16,
            "jpeg_quality": 90,
            "on_error": on_error,
        },
        "shard": str(tmp_path / "out" / "s.h5"),
        "rejects": str(tmp_path / "out" / "s.rejects.csv"),
        "log": str(tmp_path / "ingest.log"),
    }
    script = ROOT / "workflow_scripts" / "ingest_shard.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow_scripts")}
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(script), json.dumps(args)], env=env, check=False
    )
    return proc.returncode, (tmp_path / "ingest.log").read_text()


def test_script_logs_summary(tmp_path, good_images, bad_images):
    images = [good_images["coffee"], bad_images["truncated.jpg"][0]]
    returncode, log = run_script(tmp_path, images, "skip")
    assert returncode == 0
    assert "ingested 1 images, rejected 1 (truncated=1)" in log
    assert "Traceback" not in log
    assert [r.id for r in iter_image_records(tmp_path / "out" / "s.h5")] == ["id0"]


def test_script_lists_its_shard_of_a_set_made_in_the_run(tmp_path, good_images):
    # The development set's ingest jobs get no table: each lists the made folder and keeps
    # the images of its own shard (here one shard of one: every image).
    folder = tmp_path / "made"
    folder.mkdir()
    for name in ("Q00000", "Q00001"):
        (folder / f"{name}.png").write_bytes(good_images["coffee"].read_bytes())
    listed = {"folder": str(folder), "shard": "s0000", "n_shards": 1}
    returncode, log = run_script(tmp_path, [], "skip", development_shard=listed)
    assert returncode == 0, log
    ids = [r.id for r in iter_image_records(tmp_path / "out" / "s.h5")]
    assert ids == ["Q00000", "Q00001"]
    missing = {**listed, "folder": str(tmp_path / "absent")}
    (tmp_path / "again").mkdir()
    returncode, log = run_script(tmp_path / "again", [], "skip", development_shard=missing)
    assert returncode == 1 and "absent" in log and "Traceback" not in log


def test_script_fails_cleanly(tmp_path, good_images, bad_images):
    images = [good_images["coffee"], bad_images["truncated.jpg"][0]]
    returncode, log = run_script(tmp_path, images, "fail")
    assert returncode == 1
    assert str(bad_images["truncated.jpg"][0]) in log and "truncated: " in log
    assert "Traceback" not in log
    assert not (tmp_path / "out").exists()
