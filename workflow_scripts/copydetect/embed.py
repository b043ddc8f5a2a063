"""Neural global embeddings (float16 shards), one image shard at a time.

Backends ``resnet_gem`` (torchvision ResNet + GeM), ``swin`` (timm Swin), ``torchscript`` and
``onnx``; every output is L2-normalized in float32. Images are resized like torchvision, batched
by resized shape without padding (each image gets the embedding it would get alone) and decoded
in DataLoader workers. Weights files are read without running pickled code; their keys are
normalized (wrapper prefixes, heads, recomputed buffers) and EsViT/official-Swin keys are mapped
to timm's. What each backend computes, the input formats and the key mappings:
``docs/backends.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import pickle
import re
import time
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from copydetect.devices import DeviceError, resolve_device
from copydetect.params import config_params
from copydetect.progress import Progress
from copydetect.shards import decode_rgb, iter_image_records, write_embedding_shard
from copydetect.vectors import l2_normalize

logger = logging.getLogger(__name__)

# resnet18/34: the small trunks rule train_descriptor trains (config/descriptor_cpu.yaml).
RESNETS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Seed of random-init models: the query and reference jobs of a test run must share one model.
RANDOM_INIT_SEED = 0

_WRAPPER_PREFIXES = ("module.", "backbone.", "model.", "_orig_mod.")
_HEAD_PREFIXES = ("head.", "head_dense.", "fc.")
_RECOMPUTED_BUFFERS = ("relative_position_index", "attn_mask", "relative_coords_table")
_CHECKPOINT_KEYS = ("teacher", "state_dict", "model", "student")


class EmbedError(ValueError):
    """A model or its configuration cannot be used; the message says which file or key."""


# A neural entry of ``models`` is partial by design and config/config.yaml has no complete one,
# so these defaults live here, and only here; the schema's neural_model holds the ranges.
@config_params(None, schema="/$defs/neural_model", error=EmbedError)
class EmbedParams:
    """Settings of one neural model (an entry of the config's ``models`` section)."""

    backend: str = "resnet_gem"
    weights: str = ""  # "" = random init (resnet_gem and swin only: tests and demos)
    arch: str = "resnet50"
    dim: int | None = None  # projection (resnet_gem, swin); expected width (torchscript, onnx)
    gem_p: float = 3.0
    resize: str = "short_side"
    size: int = 288
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_format: str = "nchw_float"
    scales: tuple[float, ...] = (1.0,)
    batch_size: int = 32
    num_workers: int = 2
    device: str = "auto"
    fp16: bool | str = "auto"

    def __post_init__(self) -> None:
        for name in ("mean", "std", "scales"):  # YAML gives lists; keep the dataclass hashable
            object.__setattr__(self, name, tuple(float(x) for x in getattr(self, name)))
        object.__setattr__(self, "weights", str(self.weights or ""))
        problem = _params_problem(self)
        if problem:
            raise EmbedError(f"embedding model settings: {problem}")


def _params_problem(p: EmbedParams) -> str | None:
    """The first inconsistency between keys (the schema checks each key alone), or None."""
    if p.backend in ("torchscript", "onnx") and not p.weights:
        return f"backend {p.backend} needs a weights file"
    if p.backend == "resnet_gem" and p.arch not in RESNETS:
        return f"arch for resnet_gem must be one of {list(RESNETS)}, got {p.arch!r}"
    if p.backend == "swin" and "swin" not in p.arch:
        return f"arch for swin must be a timm Swin model name, got {p.arch!r}"
    if p.backend in ("resnet_gem", "swin") and p.input_format != "nchw_float":
        return f"backend {p.backend} takes input_format nchw_float"
    return None


# --- Preprocessing ------------------------------------------------------------------------


def resized_size(
    width: int, height: int, params: EmbedParams, scale: float = 1.0
) -> tuple[int, int]:
    """``(width, height)`` an image is resized to at ``scale``.

    ``short_side`` computes the long side like torchvision's ``Resize(int)`` (truncated), so
    models trained with torchvision transforms see the same input sizes.
    """
    target = max(1, round(params.size * scale))
    if params.resize == "square":
        return target, target
    if width <= height:
        return target, int(target * height / width)
    return int(target * width / height), target


def preprocess(rgb: np.ndarray, params: EmbedParams, scale: float = 1.0) -> torch.Tensor:
    """Model input of one RGB uint8 image: float32 ``[3, h, w]`` normalized, or uint8
    ``[h, w, 3]`` raw pixels for ``nhwc_uint8``."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise EmbedError(f"expected an RGB uint8 image [h, w, 3], got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    size = resized_size(width, height, params, scale)
    if size != (width, height):
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    if params.input_format == "nhwc_uint8":
        # Pillow's arrays are read-only and torch wants writable memory: copy only then.
        return torch.from_numpy(np.require(rgb, requirements=["C", "W"]))
    # (x / 255 - mean) / std as one multiply-add per pixel.
    gain = 1.0 / (255.0 * np.asarray(params.std, np.float32))
    offset = np.asarray(params.mean, np.float32) / np.asarray(params.std, np.float32)
    chw = (rgb.astype(np.float32) * gain - offset).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(chw))


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    """``(width, height)`` from the JPEG header (Pillow opens lazily: nothing is decoded)."""
    with Image.open(io.BytesIO(jpeg)) as im:
        return im.size


def plan_batches(keys: Sequence[Hashable], batch_size: int) -> list[list[int]]:
    """Indices grouped by key (the resized shapes), in order of first appearance, cut into
    batches of at most ``batch_size``: every batch stacks without padding."""
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return [
        members[start : start + batch_size]
        for members in groups.values()
        for start in range(0, len(members), batch_size)
    ]


Batch = tuple[list[int], list[torch.Tensor]]  # image indices, one stacked input per scale


def collate(items: Sequence[tuple[int, list[torch.Tensor]]]) -> Batch:
    """Stack same-shape items (``plan_batches`` guarantees it) into one input per scale."""
    indices = [index for index, _ in items]
    # numpy's single-threaded copy: torch.stack's OpenMP split is slower than the copy itself
    # when other jobs keep the cores busy (measured: 0.1 s instead of 1 ms for a 5 MB batch).
    return indices, [
        torch.from_numpy(np.stack([inputs[k].numpy() for _, inputs in items]))
        for k in range(len(items[0][1]))
    ]


class ShardImages(Dataset):
    """The JPEGs of one image shard, decoded and preprocessed at every scale on access."""

    def __init__(self, jpegs: Sequence[bytes], params: EmbedParams) -> None:
        self.jpegs = jpegs
        self.params = params

    def __len__(self) -> int:
        return len(self.jpegs)

    def __getitem__(self, index: int) -> tuple[int, list[torch.Tensor]]:
        rgb = decode_rgb(self.jpegs[index])
        return index, [preprocess(rgb, self.params, s) for s in self.params.scales]

    def shape_keys(self) -> list[tuple]:
        """Per image, its resized size at every scale (all equal for ``square``)."""
        if self.params.resize == "square":
            return [()] * len(self.jpegs)
        sizes = (jpeg_size(j) for j in self.jpegs)
        return [
            tuple(resized_size(w, h, self.params, s) for s in self.params.scales) for w, h in sizes
        ]


# --- Checkpoints -------------------------------------------------------------------------


def read_checkpoint(path: str) -> Any:
    """Load a weights file without running pickled code; errors become :class:`EmbedError`."""
    if not os.path.isfile(path):
        raise EmbedError(f"weights file not found: {path}")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise EmbedError(f"{path}: reading .safetensors needs the safetensors package") from exc
        return load_file(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types; the caller wants one message
        raise EmbedError(_read_error_message(path, exc)) from exc


def _read_error_message(path: str, exc: Exception) -> str:
    text = str(exc)
    if "TorchScript" in text:
        return f"{path} is a TorchScript archive: use backend: torchscript"
    unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if isinstance(exc, pickle.UnpicklingError) and unsupported:
        return (
            f"cannot read weights file {path}: it stores a Python object ({unsupported[1]}) that "
            "a weights-only load refuses; if you trust the file, save its state dict alone "
            "(torch.save(torch.load(PATH, weights_only=False)['teacher' or 'state_dict'], NEW))"
        )
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return f"cannot read weights file {path}: {type(exc).__name__}: {first_line}"


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(v, torch.Tensor) for v in value.values())
    )


def unwrap_state_dict(checkpoint: Any, path: str) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint (or the checkpoint itself)."""
    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}}
        if _is_state_dict(checkpoint):
            return dict(checkpoint)
        if not isinstance(checkpoint, Mapping):
            break
        inner = next((checkpoint[k] for k in _CHECKPOINT_KEYS if k in checkpoint), None)
        if inner is None:
            keys = sorted(map(str, checkpoint))[:10]
            raise EmbedError(f"{path}: no state dict found (top-level keys: {keys})")
        checkpoint = inner
    raise EmbedError(f"{path}: no state dict found (got {type(checkpoint).__name__})")


def _strip_wrappers(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def normalize_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes, drop heads and recomputed buffers (see docs/backends.md)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = _strip_wrappers(key)
        if key.startswith(_HEAD_PREFIXES) or key.endswith(_RECOMPUTED_BUFFERS):
            continue
        out[key] = value
    return out


def esvit_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official-Swin/EsViT keys → timm: patch merging moves from stage i's end to i+1's start."""
    if "layers.0.downsample.reduction.weight" not in state:
        return dict(state)  # already timm's layout (timm has no downsample in stage 0)
    pattern = re.compile(r"^layers\.(\d+)\.downsample\.")
    return {
        pattern.sub(lambda m: f"layers.{int(m[1]) + 1}.downsample.", key): value
        for key, value in state.items()
    }


def first_mismatch(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]
) -> tuple[str, int] | None:
    """``(description of the first mismatched key, number of mismatches)`` or None.

    Model order first (missing or wrong shape), then checkpoint order (unexpected keys).
    """
    problems = []
    for key, tensor in expected.items():
        if key not in found:
            if not key.endswith("num_batches_tracked"):  # older checkpoints lack it
                problems.append(f"missing key {key!r}")
        elif tuple(found[key].shape) != tuple(tensor.shape):
            shapes = f"{tuple(found[key].shape)} in the file, {tuple(tensor.shape)} in the model"
            problems.append(f"wrong shape for {key!r}: {shapes}")
    problems += [f"unexpected key {key!r}" for key in found if key not in expected]
    return (problems[0], len(problems)) if problems else None


def load_weights(model: EmbeddingNet, path: str, backend: str, arch: str) -> None:
    """Load a weights file into ``model``'s trunk (and projection); EmbedError on a misfit."""
    state = normalize_keys(unwrap_state_dict(read_checkpoint(path), path))
    if backend == "swin":
        state = esvit_to_timm(state)
    expected = {
        key.removeprefix("backbone."): value
        for key, value in model.state_dict().items()
        if not key.endswith(_RECOMPUTED_BUFFERS)
    }
    mismatch = first_mismatch(expected, state)
    if mismatch:
        problem, count = mismatch
        projection = "'proj." in problem  # our projection, not e.g. Swin's attn.proj
        hint = " (set dim to match the file's projection, or null)" if projection else ""
        raise EmbedError(
            f"{path} does not fit {backend} {arch}: {problem}{hint}; {count} mismatched key(s)"
        )
    renamed = {(k if k.startswith("proj.") else f"backbone.{k}"): v for k, v in state.items()}
    # strict=False: checked above; only absent num_batches_tracked / recomputed buffers remain.
    model.load_state_dict(renamed, strict=False)


# --- Models ------------------------------------------------------------------------------


def gem(features: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """Generalized-mean pooling over h, w of ``[n, c, h, w]`` → ``[n, c]``.

    Computed in float32 even under fp16 autocast: ``x ** 3`` of activations overflows fp16.
    """
    x = features.float().clamp(min=eps).pow(p)
    return x.mean(dim=(-2, -1)).pow(1.0 / p)


class EmbeddingNet(nn.Module):
    """A trunk (``backbone``) producing pooled features, then an optional ``proj`` Linear."""

    def __init__(self, backbone: nn.Module, width: int, dim: int | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(width, dim) if dim else None
        self.out_dim = dim or width

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pooled(x)
        return self.proj(pooled) if self.proj is not None else pooled


class GemResNet(EmbeddingNet):
    """torchvision ResNet trunk up to ``layer4`` + GeM (the classifier is removed)."""

    def __init__(self, arch: str, p: float, dim: int | None) -> None:
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        net.fc = nn.Identity()  # GeM replaces avgpool + fc; no classifier parameters remain
        super().__init__(net, RESNETS[arch], dim)
        self.p = p

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return gem(b.layer4(b.layer3(b.layer2(b.layer1(x)))), self.p)


def build_swin(arch: str, dim: int | None) -> EmbeddingNet:
    """timm Swin without classifier (pooled features), any input size."""
    import timm

    try:
        net = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True)
    except (RuntimeError, TypeError) as exc:  # unknown name, or not a Swin-like model
        raise EmbedError(f"cannot build timm model {arch!r}: {exc}") from exc
    return EmbeddingNet(net, net.num_features, dim)


def build_net(params: EmbedParams) -> EmbeddingNet:
    """The resnet_gem or swin network, with weights from ``params.weights`` or seeded random."""
    with torch.random.fork_rng(devices=[]):
        # Seeded even with weights: the projection/trunk init must not depend on earlier draws.
        torch.manual_seed(RANDOM_INIT_SEED)
        if params.backend == "resnet_gem":
            net: EmbeddingNet = GemResNet(params.arch, params.gem_p, params.dim)
        else:
            net = build_swin(params.arch, params.dim)
    if params.weights:
        load_weights(net, params.weights, params.backend, params.arch)
    else:
        logger.warning(
            "NO WEIGHTS: %s %s runs with RANDOM weights (seed %d); its embeddings are "
            "meaningless outside tests and demos. Set the model's `weights` to a checkpoint.",
            params.backend,
            params.arch,
            RANDOM_INIT_SEED,
        )
    return net.eval()


# --- Embedders ---------------------------------------------------------------------------


class Embedder:
    """A loaded model: one preprocessed batch per scale in, L2-normalized float32 rows out."""

    def __init__(self, params: EmbedParams, dim: int | None = None) -> None:
        self.params = params
        self._dim = dim

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        """Raw model output of one batch, float32 ``[n, d]``."""
        raise NotImplementedError

    def embed(self, inputs: Sequence[torch.Tensor]) -> np.ndarray:
        """L2-normalized embeddings of one batch given at every scale (same images)."""
        total = None
        for batch in inputs:
            vectors = l2_normalize(self.forward(batch).astype(np.float32), dtype=None)
            total = vectors if total is None else total + vectors
        return total if len(inputs) == 1 else l2_normalize(total, dtype=None)

    @property
    def dim(self) -> int:
        """Output width (from the model's structure, or one forward of a blank image)."""
        if self._dim is None:
            self._dim = int(self.forward(self._blank()).shape[1])
        return self._dim

    def _blank(self) -> torch.Tensor:
        rgb = np.zeros((self.params.size, self.params.size, 3), np.uint8)
        return preprocess(rgb, self.params)[None]


class TorchEmbedder(Embedder):
    """An ``nn.Module`` or TorchScript module on one device, fp16 autocast on CUDA."""

    def __init__(self, module: nn.Module, params: EmbedParams, device: torch.device) -> None:
        super().__init__(params, getattr(module, "out_dim", None))
        self.module = module.to(device).eval()
        self.device = device
        self.fp16 = device.type == "cuda" and params.fp16 in (True, "auto")

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        autocast = torch.autocast("cuda", torch.float16) if self.fp16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            out = self.module(batch.to(self.device, non_blocking=True))
        if isinstance(out, Mapping):
            out = next(iter(out.values()))
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.float().cpu().numpy()


class OnnxEmbedder(Embedder):
    """An onnxruntime session: first graph input, first graph output."""

    def __init__(self, session: Any, params: EmbedParams) -> None:
        graph_input, graph_output = session.get_inputs()[0], session.get_outputs()[0]
        width = graph_output.shape[-1] if graph_output.shape else None
        super().__init__(params, width if isinstance(width, int) else None)
        self.session = session
        self.input_name = graph_input.name
        self.output_name = graph_output.name
        # A graph exported with a fixed batch of 1 gets its batches one row at a time.
        self.one_per_run = bool(graph_input.shape) and graph_input.shape[0] == 1

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        array = batch.numpy()
        rows = [array[i : i + 1] for i in range(len(array))] if self.one_per_run else [array]
        outputs = [self.session.run([self.output_name], {self.input_name: r})[0] for r in rows]
        return np.concatenate(outputs).reshape(len(array), -1)


def _torch_device(params: EmbedParams) -> torch.device:
    try:
        device = torch.device(resolve_device(params.device))
    except DeviceError as exc:  # the rule script reports EmbedErrors as configuration errors
        raise EmbedError(str(exc)) from None
    logger.info("torch device: %s", device)  # read by benchmarks/gpu_check.py
    return device


def load_torchscript(params: EmbedParams, device: torch.device) -> TorchEmbedder:
    if not os.path.isfile(params.weights):
        raise EmbedError(f"weights file not found: {params.weights}")
    try:
        with warnings.catch_warnings():
            # torch ≥ 2.9 deprecates TorchScript; SSCD and others still ship their models so.
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(params.weights, map_location=device)
    except Exception as exc:  # RuntimeError for non-TorchScript files, ValueError, …
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EmbedError(f"cannot load TorchScript file {params.weights}: {first}") from exc
    return TorchEmbedder(module, params, device)


def load_onnx(params: EmbedParams) -> OnnxEmbedder:
    """onnxruntime session; CUDA provider when available and allowed by ``device``."""
    import onnxruntime as ort

    if not os.path.isfile(params.weights):
        raise EmbedError(f"weights file not found: {params.weights}")
    available = ort.get_available_providers()
    use_cuda = params.device != "cpu" and "CUDAExecutionProvider" in available
    if params.device == "cuda" and not use_cuda:
        raise EmbedError("device: cuda requested but onnxruntime has no CUDAExecutionProvider")
    providers = ["CUDAExecutionProvider"] * use_cuda + ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the job's thread budget
    # No busy-waiting between runs: the cores are shared with the decode workers and with
    # Snakemake's other jobs (measured 1.4× faster on a busy 2-core machine).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(params.weights, options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise EmbedError(f"cannot load ONNX file {params.weights}: {exc}") from exc
    _check_onnx_input(session.get_inputs()[0], params)
    return OnnxEmbedder(session, params)


def _check_onnx_input(graph_input: Any, params: EmbedParams) -> None:
    """Catch an input_format / size mismatch at load time with a message saying what to set."""
    wants_uint8 = graph_input.type == "tensor(uint8)"
    if wants_uint8 != (params.input_format == "nhwc_uint8"):
        fmt = "nhwc_uint8" if wants_uint8 else "nchw_float"
        raise EmbedError(
            f"{params.weights} takes {graph_input.type} input {graph_input.shape}: "
            f"set input_format: {fmt}"
        )
    shape = list(graph_input.shape or [])
    spatial = shape[1:3] if wants_uint8 else shape[2:4]
    if len(spatial) == 2 and all(isinstance(s, int) for s in spatial):
        sizes = {resized_size(100, 150, params, s) for s in params.scales}
        if params.resize != "square" or sizes != {(spatial[1], spatial[0])}:
            raise EmbedError(
                f"{params.weights} only takes {spatial[0]}x{spatial[1]} images: set resize: "
                f"square, size: {spatial[0]}, scales: [1.0]"
            )


def load_embedder(params: EmbedParams) -> Embedder:
    """Build the model of ``params`` on its device."""
    if params.backend == "onnx":
        embedder: Embedder = load_onnx(params)
    elif params.backend == "torchscript":
        embedder = load_torchscript(params, _torch_device(params))
    else:
        embedder = TorchEmbedder(build_net(params), params, _torch_device(params))
    fixed_width = params.backend in ("torchscript", "onnx")  # dim is a check there
    if fixed_width and params.dim is not None and embedder.dim != params.dim:
        raise EmbedError(f"{params.weights} gives {embedder.dim}-d vectors, dim says {params.dim}")
    return embedder


# --- Running -----------------------------------------------------------------------------


def run_batches(embedder: Embedder, batches: Iterable[Batch], n_images: int) -> np.ndarray:
    """Embed every batch and put each row back at its image's index: float32 ``[n, d]``."""
    out: np.ndarray | None = None
    progress = Progress(n_images, "images", log=logger)
    for indices, inputs in batches:
        vectors = embedder.embed(inputs)
        if out is None:
            out = np.zeros((n_images, vectors.shape[1]), np.float32)
        out[indices] = vectors
        progress.advance(len(indices))
    progress.done()
    return out if out is not None else np.zeros((0, embedder.dim), np.float32)


def shard_loader(dataset: ShardImages, params: EmbedParams, pin: bool) -> DataLoader:
    """DataLoader decoding in ``num_workers`` processes, batches planned by resized shape."""
    return DataLoader(
        dataset,
        batch_sampler=plan_batches(dataset.shape_keys(), params.batch_size),
        collate_fn=collate,
        num_workers=params.num_workers,
        pin_memory=pin,
    )


def embed_image_shard(
    shard_path: str | os.PathLike,
    out_path: str | os.PathLike,
    params: EmbedParams,
    embedder: Embedder | None = None,
) -> int:
    """Embed every image of an image shard and write the embedding shard (float16) atomically.

    ``embedder`` reuses a loaded model (benchmarks, notebooks); by default it is built from
    ``params``. Memory: the shard's JPEG bytes plus the prefetched batches. Returns the count.
    """
    start = time.perf_counter()
    embedder = embedder or load_embedder(params)
    records = list(iter_image_records(shard_path))
    dataset = ShardImages([r.jpeg for r in records], params)
    pin = isinstance(embedder, TorchEmbedder) and embedder.device.type == "cuda"
    # No loader for an empty shard: its worker processes would start for nothing.
    batches = shard_loader(dataset, params, pin) if records else []
    vectors = run_batches(embedder, batches, len(records))
    write_embedding_shard(out_path, [r.id for r in records], vectors, dim=embedder.dim)
    seconds = time.perf_counter() - start
    logger.info(
        "%s: %d images → %d-d embeddings in %.1f s (%.1f images/s)",
        shard_path,
        len(records),
        embedder.dim,
        seconds,
        len(records) / max(seconds, 1e-9),
    )
    return len(records)
