"""Overlay dataset synthesis and box filters (no detector needed)."""

from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import skimage.data
import yaml
from PIL import Image
from script_runner import run_script

from copydetect.overlay import (
    KINDS,
    DatasetParams,
    DetectParams,
    OverlayDataError,
    clip_box,
    compose,
    select_box,
    synthesize_overlay_dataset,
)
from copydetect.shards import ImageRecord, write_image_shard

FILTERS = DetectParams()  # 0.85 max area, 0.02 min area, aspect within [1/4, 4]
SIZE = (200, 100)  # width, height of the image the boxes live in: 20 000 px


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_sources(path: Path, photos: list[np.ndarray]) -> Path:
    records = [
        ImageRecord(f"S{i:02d}", jpeg_bytes(p), p.shape[1::-1]) for i, p in enumerate(photos)
    ]
    write_image_shard(path, records)
    return path


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Five photographs of different sizes and aspect ratios (one grayscale made RGB)."""
    camera = np.stack([skimage.data.camera()[::4, ::4]] * 3, axis=-1)
    return [
        skimage.data.astronaut()[::3, ::3],
        skimage.data.coffee()[::3, ::3],
        skimage.data.chelsea()[::2, ::2],
        skimage.data.rocket()[::3, ::3],
        np.ascontiguousarray(camera),
    ]


@pytest.fixture(scope="module")
def sources(tmp_path_factory, photos) -> Path:
    return write_sources(tmp_path_factory.mktemp("sources") / "sources.h5", photos)


# --- Box filters ------------------------------------------------------------------------------


def choose(boxes, confidences, threshold=0.5):
    return select_box(
        np.array(boxes, float), np.array(confidences, float), SIZE, threshold, FILTERS
    )


def test_a_good_box_is_kept_with_its_geometry() -> None:
    choice = choose([[10, 10, 110, 60]], [0.9])
    assert choice.kept and choice.reason == "ok" and choice.box == (10, 10, 110, 60)
    assert choice.area_fraction == pytest.approx(100 * 50 / 20000)
    assert choice.aspect_ratio == pytest.approx(2.0) and choice.confidence == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("box", "confidence", "reason"),
    [
        ([0, 0, 200, 95], 0.99, "too_large"),  # 95 % of the image: no overlay
        ([10, 10, 25, 25], 0.99, "too_small"),  # 1.1 %
        ([0, 40, 180, 55], 0.99, "bad_aspect"),  # 12:1 strip
        ([10, 10, 110, 60], 0.3, "low_confidence"),
    ],
)
def test_each_rejection_reason(box, confidence, reason) -> None:
    choice = choose([box], [confidence])
    assert not choice.kept and choice.box is None and choice.reason == reason
    assert choice.rejected_box == tuple(box) and choice.confidence == pytest.approx(confidence)


def test_no_box() -> None:
    choice = choose(np.zeros((0, 4)), [])
    assert choice.reason == "no_box" and choice.box is None and math.isnan(choice.confidence)


def test_geometry_is_checked_before_confidence() -> None:
    # A whole-image box says "no overlay" whatever its confidence.
    assert choose([[0, 0, 200, 100]], [0.1]).reason == "too_large"


def test_the_most_confident_passing_box_wins_and_failures_report_the_top_box() -> None:
    boxes = [[0, 0, 200, 100], [20, 20, 120, 80], [30, 30, 90, 90]]
    choice = choose(boxes, [0.95, 0.7, 0.8])
    assert choice.box == (30, 30, 90, 90) and choice.confidence == pytest.approx(0.8)
    # Nothing passes: the reason is the top box's, not the last one's.
    choice = choose([[0, 0, 200, 100], [20, 20, 120, 80]], [0.95, 0.3])
    assert choice.reason == "too_large" and choice.rejected_box == (0, 0, 200, 100)


def test_boxes_are_clipped_and_rounded_outward() -> None:
    assert clip_box([10.2, 5.7, 50.1, 40.0], SIZE) == (10, 5, 51, 40)
    assert clip_box([-12.5, -3.0, 230.0, 150.2], SIZE) == (0, 0, 200, 100)
    choice = choose([[-20.4, 10.6, 60.2, 70.1]], [0.9])
    assert choice.box == (0, 10, 61, 71)
    assert choice.area_fraction == pytest.approx(61 * 61 / 20000)


def test_a_box_outside_the_image_is_too_small() -> None:
    assert choose([[250, 10, 300, 60]], [0.9]).reason == "too_small"


def test_equal_confidences_are_ordered_by_coordinates_not_input_order() -> None:
    boxes = [[40, 10, 120, 70], [20, 20, 100, 80], [20, 10, 100, 70]]
    expected = choose(boxes, [0.8, 0.8, 0.8]).box
    assert expected == (20, 10, 100, 70)
    for order in ([1, 2, 0], [2, 0, 1], [0, 2, 1]):
        assert choose([boxes[i] for i in order], [0.8] * 3).box == expected


def test_mismatched_inputs_and_bad_params_are_errors() -> None:
    with pytest.raises(ValueError, match="2 boxes but 1 confidences"):
        choose([[0, 0, 10, 10], [0, 0, 20, 20]], [0.5])
    with pytest.raises(ValueError, match="min_area_fraction"):
        DetectParams.from_mapping({"min_area_fraction": 0.9, "max_area_fraction": 0.5})
    with pytest.raises(ValueError, match="unknown overlay.detect parameters"):
        DetectParams.from_mapping({"confidence": 0.5})
    with pytest.raises(ValueError, match="min_scale"):
        DatasetParams.from_mapping({"min_scale": 0.0})


# --- Composition: the label is where the paste really is ---------------------------------------


def content_box_by_pixels(kind: str, seed: int, params: DatasetParams, background) -> tuple:
    """Render the same draws with a black and with a white paste: the pixels that differ are
    the pasted content, whatever the frame, border or rotation."""
    renders = []
    for value in (0, 255):
        paste = Image.new("RGB", (120, 80), (value,) * 3)
        img, box = compose(paste, background, kind, random.Random(seed), params)
        renders.append((np.asarray(img, dtype=np.int16), box))
    (dark, box), (light, same_box) = renders
    assert box == same_box
    ys, xs = np.nonzero(np.abs(light - dark).max(axis=-1) > 128)
    return box, (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


@pytest.mark.parametrize("kind", KINDS)
def test_label_box_matches_the_pasted_pixels(kind, photos) -> None:
    params = DatasetParams(
        image_size=256,
        rotation_probability=0.5,
        border_probability=0.5,
        text_probability=0.0,  # clutter may cover the paste's edges: checked without it here
        shape_probability=0.0,
    )
    background = Image.fromarray(photos[1])
    for seed in range(12):
        box, found = content_box_by_pixels(kind, seed, params, background)
        # Rotated edges are resampled, so a pixel of slack.
        np.testing.assert_allclose(box, found, atol=2, err_msg=f"{kind} seed {seed}")
        assert 0 <= box[0] < box[2] <= 256 and 0 <= box[1] < box[3] <= 256


def test_a_negative_has_no_box_and_a_photo_negative_is_the_photo(photos) -> None:
    background = Image.fromarray(photos[0])
    img, box = compose(None, background, "photo", random.Random(3), DatasetParams(image_size=128))
    assert box is None and max(img.size) == 128
    with pytest.raises(ValueError, match="unknown overlay kind"):
        compose(None, background, "poster", random.Random(0), DatasetParams())


# --- The dataset ------------------------------------------------------------------------------


SMALL = DatasetParams(train_images=14, val_images=6, image_size=128, negative_fraction=0.2)


def read_labels(root: Path, split: str) -> dict[str, list[float]]:
    labels = {}
    for path in sorted((root / "labels" / split).glob("*.txt")):
        rows = [line.split() for line in path.read_text().splitlines()]
        assert len(rows) <= 1  # one paste or none
        labels[path.stem] = [float(v) for v in rows[0]] if rows else []
    return labels


def test_dataset_layout_and_labels(tmp_path, sources) -> None:
    out = tmp_path / "overlay" / "dataset"
    summary = synthesize_overlay_dataset([sources], out, SMALL)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == str(out.resolve()) and data["names"] == {0: "pasted"}
    assert (data["train"], data["val"]) == ("images/train", "images/val")
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["images"] == {"train": 14, "val": 6} == summary["images"]
    assert on_disk["seed"] == 0 and on_disk["params"]["image_size"] == 128
    for split, n in (("train", 14), ("val", 6)):
        images = sorted(p.stem for p in (out / "images" / split).glob("*.jpg"))
        labels = read_labels(out, split)
        assert images == sorted(labels) and len(images) == n
        negatives = [k for k, v in labels.items() if not v]
        assert len(negatives) == on_disk["negatives"][split]
        for values in labels.values():
            if values:
                cls, cx, cy, w, h = values
                assert cls == 0 and 0 < w <= 1 and 0 < h <= 1
                assert cx - w / 2 >= 0 and cx + w / 2 <= 1 + 1e-6
                assert cy - h / 2 >= 0 and cy + h / 2 <= 1 + 1e-6
        with Image.open(out / "images" / split / f"{images[0]}.jpg") as im:
            assert max(im.size) == 128
    assert sum(on_disk["negatives"].values()) > 0 and sum(on_disk["positives"].values()) > 0
    assert not [p for p in out.parent.iterdir() if p.name != "dataset"]  # no staging left


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "data.yaml"  # data.yaml names its own folder
    }


def test_same_seed_gives_byte_identical_files(tmp_path, sources) -> None:
    synthesize_overlay_dataset([sources], tmp_path / "a", SMALL)
    synthesize_overlay_dataset([sources], tmp_path / "b", SMALL)
    first = tree_bytes(tmp_path / "a")
    assert first == tree_bytes(tmp_path / "b") and len(first) == 2 * 20 + 1
    other = DatasetParams(**{**SMALL.__dict__, "seed": 1})
    synthesize_overlay_dataset([sources], tmp_path / "c", other)
    changed = tree_bytes(tmp_path / "c")
    assert sum(first[k] != changed[k] for k in first) > 20


def test_rebuilding_replaces_the_folder(tmp_path, sources) -> None:
    out = tmp_path / "dataset"
    synthesize_overlay_dataset([sources], out, SMALL)
    (out / "stray.txt").write_text("left from an older run")
    synthesize_overlay_dataset([sources], out, SMALL)
    assert not (out / "stray.txt").exists()


def test_few_sources_are_reused(tmp_path, photos) -> None:
    one = write_sources(tmp_path / "one.h5", photos[:1])
    params = DatasetParams(train_images=10, val_images=2, image_size=96, negative_fraction=0.0)
    summary = synthesize_overlay_dataset([one], tmp_path / "dataset", params)
    assert summary["n_sources"] == 1 and summary["positives"] == {"train": 10, "val": 2}


def test_sources_from_several_shards_do_not_depend_on_shard_order(tmp_path, photos) -> None:
    first = write_sources(tmp_path / "first.h5", photos[:2])
    records = [ImageRecord(f"T{i}", jpeg_bytes(p), p.shape[1::-1]) for i, p in enumerate(photos)]
    write_image_shard(tmp_path / "second.h5", records[2:])
    synthesize_overlay_dataset([first, tmp_path / "second.h5"], tmp_path / "a", SMALL)
    synthesize_overlay_dataset([tmp_path / "second.h5", first], tmp_path / "b", SMALL)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")


def test_no_source_image_is_a_clear_error(tmp_path) -> None:
    write_image_shard(tmp_path / "empty.h5", [])
    with pytest.raises(OverlayDataError, match="no source images in 1 image shard"):
        synthesize_overlay_dataset([tmp_path / "empty.h5"], tmp_path / "dataset", SMALL)
    with pytest.raises(OverlayDataError, match="no source images"):
        synthesize_overlay_dataset([], tmp_path / "dataset", SMALL)
    assert not (tmp_path / "dataset").exists()


def run_synthesis_script(tmp_path: Path, shards: list[Path], dataset: dict) -> tuple[int, str]:
    log = tmp_path / "synthesize.log"
    snakemake = SimpleNamespace(
        input=SimpleNamespace(shards=[str(s) for s in shards]),
        output=SimpleNamespace(dataset=str(tmp_path / "overlay" / "dataset")),
        params=SimpleNamespace(dataset=dataset),
        log=[str(log)],
    )
    try:
        run_script("synthesize_overlay_data.py", snakemake)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, log.read_text()


def test_rule_script_writes_the_dataset_and_fails_cleanly(tmp_path, sources) -> None:
    dataset = {"train_images": 4, "val_images": 2, "image_size": 64, "seed": 3}
    code, log = run_synthesis_script(tmp_path, [sources], dataset)
    assert code == 0, log
    assert len(list((tmp_path / "overlay/dataset/images/train").glob("*.jpg"))) == 4
    write_image_shard(tmp_path / "empty.h5", [])
    code, log = run_synthesis_script(tmp_path, [tmp_path / "empty.h5"], dataset)
    assert code == 1 and "no source images" in log and "Traceback" not in log
    code, log = run_synthesis_script(tmp_path, [sources], {**dataset, "size": 3})
    assert code == 1 and "unknown overlay.dataset parameters: ['size']" in log
