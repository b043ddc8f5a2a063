"""The YOLO overlay detector (ultralytics): offline setup, training, detection and crop shards.

Offline by construction: before the first import of ultralytics, ``offline_ultralytics`` sets
``YOLO_OFFLINE=1`` (its online check and PyPI update check then never run), ``YOLO_AUTOINSTALL=0``
and a ``YOLO_CONFIG_DIR`` of the run (no user settings are read), copies matplotlib's DejaVu Sans
to the two font names the dataset check otherwise downloads, and turns settings ``sync`` and every
logging integration off. Models are built from their YAML (or a local weights file), never from a
``.pt`` *name*, which would be downloaded. AMP: ultralytics' fp16 AMP check loads ``yolo26n.pt`` by
name (a download), so fp16 is not offered; on a GPU ``amp: auto`` trains in bf16 (when the device
supports it), which ultralytics runs without that check, and on the CPU AMP is always off.

Torch and ultralytics are imported inside the functions: a rule script leases its GPU first
(``copydetect.gpu``), since ``CUDA_VISIBLE_DEVICES`` is read once, when CUDA initialises.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import h5py
import numpy as np
import yaml
from PIL import Image

from copydetect.atomic import atomic_path, scratch_dir
from copydetect.overlay import BoxChoice, DetectParams, select_box
from copydetect.params import config_params
from copydetect.rectangles import RectangleParams, find_rectangles
from copydetect.shards import ImageRecord, decode_rgb, iter_image_records, write_image_shard

logger = logging.getLogger(__name__)

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")  # what ultralytics' check_font looks for
# Off: every integration that could log to a service (settings keys of ultralytics 8.4).
_INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")
# Augmentations chosen for pasted-picture detection (keys are ultralytics train arguments).
DEFAULT_AUGMENT: dict[str, float] = {
    # Mosaic stitches four images with hard seams: every seam looks like a paste boundary that
    # the labels say is not one, and the tiles shrink each paste's context. Off, and so mixup.
    "mosaic": 0.0,
    "mixup": 0.0,
    "fliplr": 0.5,  # a mirrored meme is still a meme
    "flipud": 0.0,  # upside-down screenshots do not occur
    "hsv_h": 0.015,  # colour jitter: pastes are told apart by edges and layout, not colour
    "hsv_s": 0.5,
    "hsv_v": 0.4,
    # The affine step fills uncovered space with grey: zooming out or shifting far would frame
    # the whole image like a paste (a false positive taught on negatives). Keep both small;
    # rotation is synthesized with exact boxes, an affine rotation would loosen them.
    "degrees": 0.0,
    "translate": 0.05,
    "scale": 0.2,
    "shear": 0.0,
    "perspective": 0.0,
}
_PREDICT_FLOOR = 0.01  # boxes below this confidence are not even reported ("no_box")
DETECTION_COLUMNS = (
    "query_id", "width", "height", "x0", "y0", "x1", "y1", "confidence", "area_fraction",
    "aspect_ratio", "global_crop", "local_crop", "reason",
)  # fmt: skip
CROP_JPEG_QUALITY = 95  # crops are searched again: keep them close to the query's pixels


class DetectorError(RuntimeError):
    """The detector cannot run with these inputs (a message naming the file or key)."""


@config_params("overlay.train")
class TrainParams:
    """The ``overlay.train`` section of the config (``augment`` adds to DEFAULT_AUGMENT)."""

    model: str  # a model YAML (ultralytics' or a file), or a local .pt file
    epochs: int
    image_size: int
    batch: int
    patience: int  # epochs without validation improvement before stopping (0: never)
    seed: int
    workers: int  # dataloader processes on a GPU (ultralytics uses none on the CPU)
    device: str  # auto | cpu | a CUDA device ("0")
    # [depth, width, max_channels] multipliers replacing the YAML's scale: a smaller network
    # for CPU runs and tests (e.g. [0.33, 0.125, 256] is about an eighth of yolov8n).
    scale: tuple[float, float, int] | None
    # ultralytics' "auto" picks AdamW at a small learning rate below 10k iterations and SGD
    # above, ignoring lr0; name one (SGD, AdamW, ...) to set lr0.
    optimizer: str
    lr0: float
    warmup_epochs: float
    amp: str  # auto (bf16 on a GPU that has it, else off) | bf16 | off (fp16 needs a download)
    augment: Mapping[str, float]

    def __post_init__(self) -> None:
        unknown = sorted(set(self.augment) - set(DEFAULT_AUGMENT))
        if unknown:
            raise ValueError(
                f"unknown overlay.train.augment keys {unknown}; known: {sorted(DEFAULT_AUGMENT)}"
            )
        object.__setattr__(self, "augment", {**DEFAULT_AUGMENT, **self.augment})
        if self.scale is not None:
            depth, width, channels = self.scale
            object.__setattr__(self, "scale", (float(depth), float(width), int(channels)))


# --- Offline ultralytics ----------------------------------------------------------------------


def _copy_fonts(config_dir: Path) -> None:
    """Give ultralytics the fonts it would download (DejaVu Sans, shipped with matplotlib)."""
    import matplotlib

    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    config_dir.mkdir(parents=True, exist_ok=True)
    for name in FONT_NAMES:
        if not (config_dir / name).is_file():
            shutil.copyfile(dejavu, config_dir / name)


def offline_ultralytics(config_dir: str | os.PathLike) -> ModuleType:
    """Import ultralytics so that it makes no network attempt; returns the module.

    ``config_dir`` becomes ``YOLO_CONFIG_DIR`` (settings and fonts live in its ``Ultralytics``
    folder). The environment is read at ultralytics' first import; if it was imported before,
    its config folder is prepared again (it may have been a removed temporary folder) and its
    online flag forced off.
    """
    if "ultralytics" not in sys.modules:
        os.environ.update(
            YOLO_OFFLINE="1",
            YOLO_AUTOINSTALL="0",
            YOLO_CONFIG_DIR=str(Path(config_dir).resolve()),
            ULTRALYTICS_SAFE_LOAD="1",  # for processes ultralytics starts (dataloader workers)
        )
        _copy_fonts(Path(config_dir) / "Ultralytics")
    os.environ.pop("ULTRALYTICS_API_KEY", None)  # no uploads to the Ultralytics platform
    from PIL import Image

    pil_open = Image.open
    import ultralytics
    from ultralytics import utils
    from ultralytics.utils import checks

    # ultralytics replaces PIL.Image.open process-wide with a wrapper that, on a file Pillow
    # cannot identify, runs check_requirements("pi-heif") (a pip install, i.e. a network
    # attempt) and changes the exception raised. Our images are decoded JPEGs from our own
    # shards, so Pillow's own open is put back.
    Image.open = pil_open if "ultralytics" not in pil_open.__module__ else _pil_open()
    _copy_fonts(utils.USER_CONFIG_DIR)
    utils.ONLINE = checks.ONLINE = False
    utils.SETTINGS.update(sync=False, api_key="", **dict.fromkeys(_INTEGRATIONS, False))
    _restrict_checkpoint_loading()
    return ultralytics


def _restrict_checkpoint_loading() -> None:
    """Make every checkpoint ultralytics loads (a detector named in the config, a model to
    fine-tune, best.pt at the end of training) a ``torch.load(weights_only=True)`` against its
    allow-list of torch and ultralytics layer classes, instead of a full unpickling that runs
    whatever code a crafted ``.pt`` carries. The module constant is set here because the
    environment variable is only read at ultralytics' first import."""
    from ultralytics.nn import tasks

    if not tasks._SafeLoad.SUPPORTED:  # it would quietly fall back to a full unpickling
        raise DetectorError(
            "this torch cannot load detector checkpoints safely (weights_only with an "
            "allow-list needs torch >= 2.6): refusing to unpickle detector files"
        )
    tasks.SAFE_LOAD = True


def _pil_open():
    """Pillow's own ``Image.open``, also when ultralytics had already patched it."""
    from ultralytics.utils import patches

    return patches._image_open


# --- Training ---------------------------------------------------------------------------------


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def stage_dataset(dataset_dir: Path, dest: Path) -> Path:
    """Hard-link the dataset into ``dest`` and write its data.yaml; returns that file.

    ultralytics writes label caches next to the labels: staging keeps them out of the dataset
    (another rule's output) and makes the data.yaml point to where the files really are.
    """
    source = dataset_dir / "data.yaml"
    if not source.is_file():
        raise DetectorError(f"{dataset_dir}: no data.yaml (not an overlay dataset)")
    for sub in ("images", "labels"):
        shutil.copytree(dataset_dir / sub, dest / sub, copy_function=_link_or_copy)
    data = yaml.safe_load(source.read_text())
    data["path"] = str(dest.resolve())
    (dest / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return dest / "data.yaml"


def model_source(params: TrainParams, scratch: Path) -> str:
    """The model to build: the YAML with ``params.scale`` written in, or a local weights file."""
    if params.model.endswith(".pt"):
        if not Path(params.model).is_file():  # ultralytics would download a missing .pt name
            raise DetectorError(f"weights file not found: {params.model} (nothing is downloaded)")
        return params.model
    if not params.model.endswith((".yaml", ".yml")):
        raise DetectorError(
            f"overlay.train.model must be a .yaml or a local .pt, got {params.model}"
        )
    if params.scale is None:
        return params.model
    from ultralytics.nn.tasks import yaml_model_load

    spec = yaml_model_load(params.model)
    spec.pop("yaml_file", None)
    # A file name without a scale letter, so that ultralytics takes the only scale given.
    spec["scales"], spec["scale"] = {"custom": list(params.scale)}, "custom"
    path = scratch / "overlay-model.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def _amp(params: TrainParams, device: str) -> str | bool:
    """bf16 on a GPU that supports it (the fp16 AMP check would download weights), else off."""
    if device == "cpu" or params.amp == "off":
        return False
    import torch

    if params.amp == "auto" and not torch.cuda.is_bf16_supported():
        return False
    return "bf16"


def _count_images(dataset_dir: Path, split: str) -> int:
    return sum(1 for _ in (dataset_dir / "images" / split).glob("*.jpg"))


def _training_metrics(trainer: Any) -> dict[str, float]:
    """mAP, precision and recall of the final validation of best.pt."""
    results = dict(trainer.metrics or {})
    names = {
        "map50": "metrics/mAP50(B)",
        "map50_95": "metrics/mAP50-95(B)",
        "precision": "metrics/precision(B)",
        "recall": "metrics/recall(B)",
    }
    return {key: float(results.get(name, math.nan)) for key, name in names.items()}


def train_arguments(
    params: TrainParams, data_yaml: Path, device: str, workers: int, scratch: Path
) -> dict[str, Any]:
    """The arguments of ultralytics' ``model.train`` for this recipe."""
    return {
        "data": str(data_yaml),
        "epochs": params.epochs,
        "imgsz": params.image_size,
        "batch": params.batch,
        # One optimizer step per batch: ultralytics otherwise accumulates batches up to 64
        # images, which leaves a small dataset with a step every few epochs.
        "nbs": params.batch,
        "patience": params.patience,
        "optimizer": params.optimizer,
        "lr0": params.lr0,
        "warmup_epochs": params.warmup_epochs,
        "seed": params.seed,
        "deterministic": True,
        "workers": workers,
        "device": device,
        "amp": _amp(params, device),
        "project": str(scratch),
        "name": "run",
        "exist_ok": True,
        "plots": False,  # plots need fonts and matplotlib time; metrics go to the JSON
        "pretrained": False,
        "close_mosaic": 0,
        "verbose": False,
        **params.augment,
    }


def train_detector(
    dataset_dir: str | os.PathLike,
    weights_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
    params: TrainParams,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Train the detector on an overlay dataset; writes best.pt and a metrics JSON atomically.

    Training runs in a scratch folder next to ``weights_path`` (removed afterwards); only the
    best checkpoint is moved to ``weights_path``. ``threads`` caps the dataloader workers.
    Returns the metrics written.
    """
    dataset_dir, weights_path = Path(dataset_dir), Path(weights_path)
    with scratch_dir(weights_path.parent, f".{weights_path.name}.train-") as scratch:
        ultralytics = offline_ultralytics(scratch / "yolo_config")
        data_yaml = stage_dataset(dataset_dir, scratch / "data")
        model = build_yolo(ultralytics, model_source(params, scratch), "overlay.train.model")
        workers = params.workers if threads is None else min(params.workers, threads)
        start = time.monotonic()
        model.train(**train_arguments(params, data_yaml, device, workers, scratch))
        seconds = time.monotonic() - start
        best = Path(model.trainer.best)
        if not best.is_file():
            raise DetectorError(f"training finished without a checkpoint in {best.parent}")
        metrics = {
            **_training_metrics(model.trainer),
            "epochs_run": int(model.trainer.epoch) + 1,
            "image_size": params.image_size,
            "train_images": _count_images(dataset_dir, "train"),
            "val_images": _count_images(dataset_dir, "val"),
            "seconds": round(seconds, 1),
            "device": device,
            "model": params.model,
            "scale": list(params.scale) if params.scale else None,
        }
        with atomic_path(weights_path) as tmp:
            shutil.copyfile(best, tmp)
        with atomic_path(metrics_path) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    logger.info("overlay detector %s: %s", weights_path, metrics)
    return metrics


# --- Detection --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """The decision for one query: its size and the box choices of both crop branches."""

    query_id: str
    size: tuple[int, int]  # (width, height) of the stored query image
    global_choice: BoxChoice
    local_choice: BoxChoice

    def row(self) -> dict[str, Any]:
        """One CSV row. The box columns describe the local branch's box (the global branch's
        kept box is the same one, its threshold being the higher); ``reason`` is ``ok`` when
        the global branch kept it, else why the global branch did not."""
        choice = self.local_choice
        box = choice.described_box or ("",) * 4
        return {
            "query_id": self.query_id,
            "width": self.size[0],
            "height": self.size[1],
            **dict(zip(("x0", "y0", "x1", "y1"), box, strict=True)),
            "confidence": _fmt(choice.confidence),
            "area_fraction": _fmt(choice.area_fraction),
            "aspect_ratio": _fmt(choice.aspect_ratio),
            "global_crop": int(self.global_choice.kept),
            "local_crop": int(choice.kept),
            "reason": self.global_choice.reason,
        }


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def decide(
    query_id: str,
    size: tuple[int, int],
    boxes: np.ndarray,
    confidences: np.ndarray,
    params: DetectParams,
) -> Detection:
    """Apply both branches' filters to the detector's boxes of one query."""
    return Detection(
        query_id,
        size,
        select_box(boxes, confidences, size, params.global_confidence, params),
        select_box(boxes, confidences, size, params.local_confidence, params),
    )


def load_detector(weights: str | os.PathLike, config_dir: str | os.PathLike) -> Any:
    """The YOLO model of a local weights file (offline; a missing file is an error)."""
    if not Path(weights).is_file():
        raise DetectorError(f"detector weights not found: {weights}")
    return build_yolo(offline_ultralytics(config_dir), str(weights), "overlay.detector")


def build_yolo(ultralytics: ModuleType, source: str, key: str) -> Any:
    """``ultralytics.YOLO(source)`` (a model YAML or a checkpoint, loaded by the restricted
    loader of :func:`offline_ultralytics`), its failures as one message naming the config key."""
    try:
        return ultralytics.YOLO(source, task="detect")
    except FileNotFoundError as exc:  # a YAML that is neither a file nor one of ultralytics'
        raise DetectorError(f"{key} {source!r}: {exc}") from None
    except TypeError as exc:  # the restricted loader refused the file, or it is not a checkpoint
        detail = " ".join(str(exc).split())
        raise DetectorError(
            f"{key} {source!r} was refused: {detail} (detector files are loaded with "
            "torch.load(weights_only=True) and ultralytics' allow-list of layer classes, so a "
            "file that needs other Python objects is never unpickled)"
        ) from None


def predict_boxes(
    model: Any, images: Sequence[np.ndarray], params: DetectParams, device: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(xyxy [k, 4], confidences [k])`` per RGB image, in that image's pixels."""
    if not images:
        return []
    bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]  # ultralytics reads arrays as BGR
    results = model.predict(
        bgr,
        imgsz=params.image_size,
        conf=_PREDICT_FLOOR,
        device=device,
        verbose=False,
        max_det=20,
        batch=params.batch_size,
    )
    return [
        (
            r.boxes.xyxy.cpu().numpy().astype(np.float64),
            r.boxes.conf.cpu().numpy().astype(np.float64),
        )
        for r in results
    ]


@dataclass
class CropSet:
    """The crops of one branch, in query order."""

    records: list[ImageRecord] = field(default_factory=list)
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)

    def add(self, query_id: str, rgb: np.ndarray, choice: BoxChoice) -> None:
        x0, y0, x1, y1 = choice.box
        crop = Image.fromarray(rgb[y0:y1, x0:x1])
        buf = io.BytesIO()
        crop.save(buf, format="JPEG", quality=CROP_JPEG_QUALITY)
        self.records.append(ImageRecord(query_id, buf.getvalue(), crop.size))
        self.boxes.append(choice.box)
        self.confidences.append(choice.confidence)


def write_crop_shard(
    path: str | os.PathLike, records: Sequence[ImageRecord], boxes: Sequence, confidences: Sequence
) -> None:
    """An image shard of crops plus ``boxes`` (float32 [n, 4] x0, y0, x1, y1 in the query's
    pixels) and ``confidence`` (float32 [n]); written atomically, n = 0 included."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    confidences = np.asarray(confidences, dtype=np.float32).reshape(-1)
    if not len(records) == len(boxes) == len(confidences):
        raise ValueError(
            f"{len(records)} crops, {len(boxes)} boxes, {len(confidences)} confidences"
        )
    with atomic_path(path) as tmp:
        write_image_shard(tmp, records)
        with h5py.File(tmp, "a") as f:
            f.create_dataset("boxes", data=boxes)
            f.create_dataset("confidence", data=confidences)


def _batches(shard: str | os.PathLike, size: int):
    """Lists of at most ``size`` ``(id, rgb)`` pairs of an image shard."""
    batch: list[tuple[str, np.ndarray]] = []
    for record in iter_image_records(shard):
        batch.append((record.id, decode_rgb(record.jpeg)))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


BoxFinder = Callable[[Sequence[np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]


def detect_overlays(
    shard: str | os.PathLike,
    weights: str | os.PathLike,
    detections_csv: str | os.PathLike,
    crops_global: str | os.PathLike,
    crops_local: str | os.PathLike,
    params: DetectParams,
    device: str = "cpu",
) -> list[Detection]:
    """Detect the overlay of every query of an image shard with the YOLO model of ``weights``;
    write the CSV and both crop shards.

    Boxes are in the pixels of the stored query image (``width``/``height`` in the CSV).
    """
    with scratch_dir(Path(detections_csv).parent, ".detect-") as scratch:
        model = load_detector(weights, scratch / "yolo_config")
        return crop_shards(
            shard,
            lambda images: predict_boxes(model, images, params, device),
            detections_csv,
            crops_global,
            crops_local,
            params,
        )


def detect_rectangles(
    shard: str | os.PathLike,
    detections_csv: str | os.PathLike,
    crops_global: str | os.PathLike,
    crops_local: str | os.PathLike,
    params: DetectParams,
    rectangles: RectangleParams,
) -> list[Detection]:
    """:func:`detect_overlays` with the weights-free rectangle finder (``copydetect.rectangles``):
    no model, no device, ~2 ms of CPU per query."""

    def find(images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [find_rectangles(rgb, rectangles) for rgb in images]

    return crop_shards(shard, find, detections_csv, crops_global, crops_local, params)


def crop_shards(
    shard: str | os.PathLike,
    find_boxes: BoxFinder,
    detections_csv: str | os.PathLike,
    crops_global: str | os.PathLike,
    crops_local: str | os.PathLike,
    params: DetectParams,
) -> list[Detection]:
    """Boxes of every query of an image shard by ``find_boxes`` (a batch of RGB images ->
    ``(xyxy, confidences)`` per image), both branches' decisions, the CSV and the crop shards."""
    detections, crops = [], {"global": CropSet(), "local": CropSet()}
    for batch in _batches(shard, params.batch_size):
        found = find_boxes([rgb for _, rgb in batch])
        for (query_id, rgb), (boxes, conf) in zip(batch, found, strict=True):
            detection = decide(query_id, (rgb.shape[1], rgb.shape[0]), boxes, conf, params)
            detections.append(detection)
            for name, choice in (
                ("global", detection.global_choice),
                ("local", detection.local_choice),
            ):
                if choice.kept:
                    crops[name].add(query_id, rgb, choice)
    write_detections(detections_csv, detections)
    for name, path in (("global", crops_global), ("local", crops_local)):
        c = crops[name]
        write_crop_shard(path, c.records, c.boxes, c.confidences)
    logger.info(
        "%s: %d queries, %d global and %d local crops",
        shard,
        len(detections),
        len(crops["global"].records),
        len(crops["local"].records),
    )
    return detections


def write_detections(path: str | os.PathLike, detections: Sequence[Detection]) -> None:
    """The detections CSV, one row per query in shard order, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=DETECTION_COLUMNS)
        writer.writeheader()
        writer.writerows(d.row() for d in detections)
