"""Tests of the weights-free overlay box finder (copydetect.rectangles) and its crop shards."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from copydetect.detector import detect_rectangles
from copydetect.overlay import DetectParams
from copydetect.rectangles import RectangleParams, edge_maps, find_rectangles
from copydetect.shards import ImageRecord, iter_image_records, write_image_shard

PARAMS = RectangleParams()


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    """A busy picture: blurred noise blobs, so that no row or column is a long straight edge."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (h, w, 3)).astype(np.float32)
    blobs = cv2.GaussianBlur(noise, (0, 0), 3)
    blobs = blobs / (np.abs(blobs).max() + 1e-6)
    return np.clip(110 + 60 * blobs, 0, 255).astype(np.uint8)


def _pasted(box: tuple[int, int, int, int], size: tuple[int, int] = (240, 320)) -> np.ndarray:
    """A photo-like picture pasted at ``box`` (x0, y0, x1, y1) onto another picture."""
    h, w = size
    canvas = _texture(h, w, 1)
    x0, y0, x1, y1 = box
    canvas[y0:y1, x0:x1] = np.clip(_texture(y1 - y0, x1 - x0, 2).astype(int) + 90, 0, 255)
    return canvas


def _iou(a: np.ndarray, b: tuple[int, int, int, int]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


@pytest.mark.parametrize("box", [(60, 40, 220, 170), (100, 80, 300, 220), (10, 20, 120, 110)])
def test_a_pasted_image_is_found(box: tuple[int, int, int, int]) -> None:
    boxes, scores = find_rectangles(_pasted(box), PARAMS)
    assert len(boxes) >= 1
    assert _iou(boxes[0], box) > 0.9
    assert scores[0] >= PARAMS.min_support


def test_a_paste_touching_one_border_is_found() -> None:
    box = (0, 50, 180, 200)  # left side on the image border: three interior sides
    boxes, _ = find_rectangles(_pasted(box), PARAMS)
    assert len(boxes) >= 1 and _iou(boxes[0], box) > 0.9


def test_a_padded_image_is_found() -> None:
    image = np.full((200, 260, 3), (30, 200, 210), np.uint8)
    image[30:170, 40:220] = _texture(140, 180, 3)
    boxes, _ = find_rectangles(image, PARAMS)
    assert _iou(boxes[0], (40, 30, 220, 170)) > 0.9


def test_no_box_in_a_picture_without_a_paste() -> None:
    boxes, scores = find_rectangles(_texture(240, 320, 4), PARAMS)
    assert len(boxes) == len(scores) == 0


def test_a_caption_bar_alone_is_no_paste() -> None:
    """A meme-like bar over the full width has one interior side: not enough (3 needed)."""
    image = _texture(240, 320, 5)
    image[:60] = 255
    assert len(find_rectangles(image, PARAMS)[0]) == 0
    two_sides = RectangleParams(min_interior_sides=1)
    assert len(find_rectangles(image, two_sides)[0]) >= 1


def test_flat_and_tiny_images_give_nothing() -> None:
    assert len(find_rectangles(np.zeros((64, 64, 3), np.uint8), PARAMS)[0]) == 0
    assert len(find_rectangles(np.zeros((3, 3, 3), np.uint8), PARAMS)[0]) == 0
    assert len(find_rectangles(np.zeros((40, 50), np.uint8), PARAMS)[0]) == 0  # gray


def test_edge_maps_mark_a_step_with_one_pixel_of_slack() -> None:
    image = np.zeros((10, 12, 3), np.uint8)
    image[5:] = 100
    horizontal, vertical = edge_maps(image, 16)
    assert horizontal[3:7].all() and not horizontal[:3].any() and not horizontal[7:].any()
    assert not vertical.any()


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="min_side"):
        RectangleParams(min_side=1.5)
    with pytest.raises(ValueError, match="min_interior_sides"):
        RectangleParams(min_interior_sides=0)


def test_detect_rectangles_writes_the_crops_of_a_shard(tmp_path: Path) -> None:
    box = (60, 40, 220, 170)
    images = {"Q0": _pasted(box), "Q1": _texture(240, 320, 6)}
    records = []
    for query_id, rgb in images.items():
        ok, jpeg = cv2.imencode(".png", rgb[..., ::-1])  # lossless: the edges stay exact
        assert ok
        records.append(ImageRecord(query_id, jpeg.tobytes(), (rgb.shape[1], rgb.shape[0])))
    shard = tmp_path / "queries.h5"
    write_image_shard(shard, records)
    out = {name: tmp_path / f"{name}.h5" for name in ("crops_global", "crops_local")}
    detect_rectangles(
        shard,
        tmp_path / "detections.csv",
        out["crops_global"],
        out["crops_local"],
        DetectParams(),
        PARAMS,
    )
    with open(tmp_path / "detections.csv", newline="") as f:
        rows = {row["query_id"]: row for row in csv.DictReader(f)}
    assert rows["Q0"]["local_crop"] == "1" and rows["Q1"]["local_crop"] == "0"
    assert rows["Q1"]["reason"] == "no_box"
    for path in out.values():
        crops = list(iter_image_records(path))
        assert [c.id for c in crops] == ["Q0"]
        width, height = crops[0].orig_size
        assert abs(width - 160) <= 3 and abs(height - 130) <= 3


def test_the_rule_script_runs_the_rectangle_finder_without_torch(tmp_path: Path) -> None:
    """detect_overlays.py with ``detector: rectangles``: no weights, no GPU lease, and its
    parameters from the rule's ``rectangles`` section (a strict one finds nothing)."""
    from script_runner import Named, run_script

    rgb = _pasted((60, 40, 220, 170))
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    write_image_shard(tmp_path / "q.h5", [ImageRecord("Q0", png.tobytes(), (320, 240))])

    def run(name: str, rectangles: dict) -> Path:
        out = tmp_path / name
        snakemake = SimpleNamespace(
            input=Named(shard=str(tmp_path / "q.h5")),
            output=Named(
                detections=str(out / "d.csv"),
                crops_global=str(out / "g.h5"),
                crops_local=str(out / "l.h5"),
            ),
            params=Named(
                detector="rectangles",
                detect={},
                rectangles=rectangles,
                gpu_lock_dir=str(tmp_path / "locks"),
            ),
            log=[str(tmp_path / f"{name}.log")],
            resources=Named(gpu=0),
        )
        out.mkdir()
        run_script("detect_overlays.py", snakemake)
        return out

    found = run("default", {})
    assert [c.id for c in iter_image_records(found / "l.h5")] == ["Q0"]
    strict = run("strict", {"min_support": 1.0, "step": 250.0})
    assert list(iter_image_records(strict / "l.h5")) == []
    assert "torch" not in (tmp_path / "default.log").read_text()
