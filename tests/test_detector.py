"""The YOLO overlay detector: offline training, overfitting a few overlays, detection outputs.

The detector is trained once per session (a network an eighth the width of YOLOv8n, 128 px,
12 easy overlays) through the rule script, then the rule scripts detect with its weights.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest
import skimage.data
import torch
from PIL import Image
from script_runner import run_script

from copydetect.detector import (
    DETECTION_COLUMNS,
    DetectorError,
    TrainParams,
    model_source,
    offline_ultralytics,
    write_crop_shard,
)
from copydetect.overlay import DatasetParams, synthesize_overlay_dataset
from copydetect.shards import ImageRecord, decode_rgb, iter_image_records, write_image_shard

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# Easy overlays: one clear paste per image, no clutter, no negatives.
EASY = {
    "train_images": 12,
    "val_images": 4,
    "image_size": 128,
    "min_scale": 0.35,
    "max_scale": 0.7,
    "negative_fraction": 0.0,
    "rotation_probability": 0.0,
    "border_probability": 0.0,
    "text_probability": 0.0,
    "shape_probability": 0.0,
    "seed": 1,
}
# Enough steps for a from-scratch detector to memorize 12 images on a CPU: small batches, one
# optimizer step per batch, a brisk AdamW and no photometric or geometric augmentation.
TINY = {
    "model": "yolov8n.yaml",
    "scale": [0.33, 0.125, 256],
    "epochs": 70,
    "image_size": 128,
    "batch": 4,
    "patience": 0,
    "optimizer": "AdamW",
    "lr0": 0.01,
    "warmup_epochs": 1,
    "workers": 0,
    "device": "cpu",
    "augment": {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "translate": 0.0, "scale": 0.0},
}
DETECT = {"image_size": 128, "batch_size": 8, "device": "cpu"}


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def true_boxes(dataset: Path, split: str) -> dict[str, tuple[float, ...]]:
    """Pixel boxes of the labels (x0, y0, x1, y1); negatives are left out."""
    boxes = {}
    for label in sorted((dataset / "labels" / split).glob("*.txt")):
        values = label.read_text().split()
        if values:
            with Image.open(dataset / "images" / split / f"{label.stem}.jpg") as im:
                w, h = im.size
            cx, cy, bw, bh = (float(v) for v in values[1:])
            boxes[label.stem] = (
                (cx - bw / 2) * w,
                (cy - bh / 2) * h,
                (cx + bw / 2) * w,
                (cy + bh / 2) * h,
            )
    return boxes


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> SimpleNamespace:
    """An easy dataset from five photos, and a query shard of its training images."""
    root = tmp_path_factory.mktemp("detector")
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    photos += [skimage.data.rocket(), np.stack([skimage.data.camera()] * 3, axis=-1)]
    sources = [ImageRecord(f"S{i}", jpeg_bytes(p), p.shape[1::-1]) for i, p in enumerate(photos)]
    write_image_shard(root / "sources.h5", sources)
    dataset = root / "overlay" / "dataset"
    synthesize_overlay_dataset([root / "sources.h5"], dataset, DatasetParams(**EASY))
    queries = []
    for path in sorted((dataset / "images" / "train").glob("*.jpg")):
        with Image.open(path) as im:
            queries.append(ImageRecord(f"Q{path.stem}", path.read_bytes(), im.size))
    write_image_shard(root / "queries.h5", queries)
    return SimpleNamespace(root=root, dataset=dataset, queries=root / "queries.h5")


class Named(dict):
    """A Snakemake section stand-in: attribute access and ``get``."""

    __getattr__ = dict.__getitem__


def run_rule(name: str, log: Path, **sections: dict) -> tuple[int, str]:
    """Run a rule script with a fake ``snakemake``; returns (exit status, log text)."""
    named = {key: Named(value) for key, value in sections.items()}
    snakemake = SimpleNamespace(log=[str(log)], threads=2, resources=Named(gpu=0), **named)
    try:
        run_script(name, snakemake)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, log.read_text()


@pytest.fixture(scope="session")
def trained(data) -> SimpleNamespace:
    """The detector trained by the train rule script (HOME pointing to a scratch folder)."""
    import torch

    threads = torch.get_num_threads()
    out = data.root / "overlay"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(data.root / "home"))
        code, log = run_rule(
            "train_overlay_detector.py",
            data.root / "train.log",
            input={"dataset": str(data.dataset)},
            output={"weights": str(out / "detector.pt"), "metrics": str(out / "m.json")},
            params={"train": TINY, "gpu_lock_dir": str(data.root / "locks")},
        )
    torch.set_num_threads(threads)
    assert code == 0, log
    return SimpleNamespace(weights=out / "detector.pt", metrics=out / "m.json")


def detect(data, weights: Path, shard: Path, name: str, detect: dict = DETECT) -> tuple:
    out = data.root / name
    code, log = run_rule(
        "detect_overlays.py",
        data.root / f"{name}.log",
        input={"shard": str(shard), "weights": str(weights)},
        output={
            "detections": str(out / "detections.csv"),
            "crops_global": str(out / "crops_global.h5"),
            "crops_local": str(out / "crops_local.h5"),
        },
        params={
            "detector": str(weights),
            "detect": detect,
            "rectangles": {},
            "gpu_lock_dir": str(data.root / "locks"),
        },
    )
    return code, log, out


def test_training_writes_weights_and_metrics(data, trained) -> None:
    metrics = json.loads(trained.metrics.read_text())
    assert metrics["epochs_run"] == TINY["epochs"] and metrics["device"] == "cpu"
    assert (metrics["train_images"], metrics["val_images"]) == (12, 4)
    assert metrics["image_size"] == 128 and metrics["seconds"] > 0
    assert {"map50", "map50_95", "precision", "recall"} <= set(metrics)
    assert trained.weights.stat().st_size > 0
    # Only the outputs remain: no scratch folder, no label cache written into the dataset.
    assert sorted(p.name for p in trained.weights.parent.iterdir()) == [
        "dataset",
        "detector.pt",
        "m.json",
    ]
    assert not list(data.dataset.rglob("*.cache"))


def test_overfit_detector_finds_the_pasted_boxes(data, trained) -> None:
    code, log, out = detect(data, trained.weights, data.queries, "overfit")
    assert code == 0, log
    rows = pd.read_csv(out / "detections.csv", keep_default_na=False)
    truth = true_boxes(data.dataset, "train")
    hits = []
    for row in rows.itertuples():
        box = (row.x0, row.y0, row.x1, row.y1)
        hits.append(
            row.local_crop == 1 and iou([float(v) for v in box], truth[row.query_id[1:]]) > 0.5
        )
    assert np.mean(hits) >= 0.75, rows.to_string()


def test_detection_outputs_follow_the_contract(data, trained) -> None:
    code, log, out = detect(data, trained.weights, data.queries, "contract")
    assert code == 0, log
    rows = pd.read_csv(out / "detections.csv", keep_default_na=False)
    assert tuple(rows.columns) == DETECTION_COLUMNS
    assert list(rows.query_id) == [r.id for r in iter_image_records(data.queries)]
    assert set(rows.reason) <= {
        "ok",
        "no_box",
        "low_confidence",
        "too_large",
        "too_small",
        "bad_aspect",
    }
    assert ((rows.reason == "ok") == (rows.global_crop == 1)).all()
    assert (rows.global_crop <= rows.local_crop).all()  # the global threshold is the higher one
    for branch in ("global", "local"):
        path = out / f"crops_{branch}.h5"
        kept = rows[rows[f"{branch}_crop"] == 1]
        records = list(iter_image_records(path))
        assert [r.id for r in records] == list(kept.query_id)
        with h5py.File(path, "r") as f:
            boxes, confidence = f["boxes"][:], f["confidence"][:]
        assert boxes.dtype == np.float32 and boxes.shape == (len(records), 4)
        np.testing.assert_array_equal(boxes, kept[["x0", "y0", "x1", "y1"]].to_numpy(float))
        np.testing.assert_allclose(confidence, kept.confidence.to_numpy(float), rtol=1e-5)
        for record, box in zip(records, boxes, strict=True):
            size = (int(box[2] - box[0]), int(box[3] - box[1]))
            assert record.orig_size == size == decode_rgb(record.jpeg).shape[1::-1]


def test_an_empty_query_shard_gives_empty_valid_outputs(data, trained) -> None:
    write_image_shard(data.root / "empty.h5", [])
    code, log, out = detect(data, trained.weights, data.root / "empty.h5", "empty")
    assert code == 0, log
    assert pd.read_csv(out / "detections.csv").empty
    for branch in ("global", "local"):
        assert list(iter_image_records(out / f"crops_{branch}.h5")) == []
        with h5py.File(out / f"crops_{branch}.h5", "r") as f:
            assert f["boxes"].shape == (0, 4) and f["confidence"].shape == (0,)


def test_bad_inputs_fail_with_one_log_line(data, tmp_path) -> None:
    code, log, _ = detect(data, tmp_path / "gone.pt", data.queries, "missing")
    assert code == 1 and "detector weights not found" in log and "Traceback" not in log
    code, log, _ = detect(
        data, tmp_path / "gone.pt", data.queries, "bad", {**DETECT, "confidence": 1}
    )
    assert code == 1 and "unknown overlay.detect parameters" in log


def test_train_params_are_validated(tmp_path) -> None:
    assert TrainParams.from_mapping({"augment": {"fliplr": 0.0}}).augment["mosaic"] == 0.0
    with pytest.raises(ValueError, match="unknown overlay.train parameters"):
        TrainParams.from_mapping({"epoch": 3})
    with pytest.raises(ValueError, match="amp: 'fp16' is not one of"):
        TrainParams.from_mapping({"amp": "fp16"})
    with pytest.raises(ValueError, match="unknown overlay.train.augment keys"):
        TrainParams.from_mapping({"augment": {"copy_paste": 0.5}})
    with pytest.raises(ValueError, match="multiple of 32"):
        TrainParams.from_mapping({"image_size": 100})
    with pytest.raises(DetectorError, match="nothing is downloaded"):
        model_source(TrainParams(model="yolov8n.pt"), tmp_path)


def test_crop_shard_lengths_must_agree(tmp_path) -> None:
    with pytest.raises(ValueError, match="1 crops, 0 boxes"):
        write_crop_shard(tmp_path / "c.h5", [ImageRecord("q", b"", (1, 1))], [], [])
    assert not (tmp_path / "c.h5").exists()


# Runs in a fresh interpreter, so ultralytics' import-time checks run under the guard too.
NO_NETWORK = """
import json, socket, sys, urllib.request

attempts = []

def refuse(name):
    def refused(*args, **kwargs):
        attempts.append(f"{name}{args[:2]!r}")
        raise OSError(f"network disabled by the test: {name}")
    return refused

socket.socket.connect = refuse("socket.connect")
socket.socket.connect_ex = refuse("socket.connect_ex")
socket.create_connection = refuse("socket.create_connection")
socket.getaddrinfo = refuse("socket.getaddrinfo")
socket.gethostbyname = refuse("socket.gethostbyname")
urllib.request.urlopen = refuse("urllib.request.urlopen")
try:
    import requests
    requests.Session.request = refuse("requests.Session.request")
except ImportError:
    pass

from copydetect.detector import TrainParams, detect_overlays, train_detector
from copydetect.overlay import DetectParams

dataset, queries, out = sys.argv[1:4]
params = TrainParams.from_mapping(json.loads(sys.argv[4]))
train_detector(dataset, f"{out}/w.pt", f"{out}/m.json", params, device="cpu", threads=1)
detect_overlays(queries, f"{out}/w.pt", f"{out}/d.csv", f"{out}/g.h5", f"{out}/l.h5",
                DetectParams(image_size=128, device="cpu"))
seen = list(attempts)
try:  # the guard itself must be live
    socket.getaddrinfo("example.com", 443)
except OSError:
    pass
print(json.dumps({"attempts": seen, "guard_live": len(attempts) == len(seen) + 1}))
"""


def test_training_and_detection_make_no_network_attempt(data, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "ULTRALYTICS"))}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT / "workflow_scripts"))
    env.pop("XDG_CONFIG_HOME", None)
    one_epoch = json.dumps({**TINY, "epochs": 1})
    args = [str(data.dataset), str(data.queries), str(tmp_path), one_epoch]
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NO_NETWORK), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"attempts": [], "guard_live": True}, result.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "d.csv")) == 12
    # No user settings read or written (matplotlib may cache its font list there).
    assert not [p for p in (tmp_path / "home").rglob("*") if "ltralytics" in p.name]


def test_pillow_open_is_left_unpatched(trained, tmp_path) -> None:
    """ultralytics' Image.open wrapper would pip-install pi-heif on an unidentified file."""
    offline_ultralytics(tmp_path / "yolo")
    assert Image.open.__module__ == "PIL.Image"
    not_an_image = tmp_path / "text.jpg"
    not_an_image.write_text("hello")
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(not_an_image)


def test_a_crafted_checkpoint_to_fine_tune_is_refused(data, tmp_path) -> None:
    """overlay.train.model may name a local .pt: it is loaded without running its code."""
    from test_model_files import RunsCode

    marker, crafted = tmp_path / "code-ran", tmp_path / "crafted.pt"
    torch.save({"model": RunsCode(marker)}, crafted)
    code, log = run_rule(
        "train_overlay_detector.py",
        tmp_path / "train.log",
        input={"dataset": str(data.dataset)},
        output={"weights": str(tmp_path / "d.pt"), "metrics": str(tmp_path / "m.json")},
        params={"train": {**TINY, "model": str(crafted)}, "gpu_lock_dir": str(tmp_path / "l")},
    )
    assert code == 1 and "overlay.train.model" in log and "was refused" in log
    assert not marker.exists() and not (tmp_path / "d.pt").exists()
