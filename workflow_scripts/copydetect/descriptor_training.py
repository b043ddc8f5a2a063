"""Training a copy-detection descriptor on the training set (SSCD, Pizzi et al., CVPR 2022).

The network is the ``resnet_gem`` backend's own (:class:`copydetect.embed.GemResNet`: a
torchvision ResNet trunk, GeM pooling, a linear projection; L2-normalized), so the state dict
written here is exactly what that backend loads. Each step takes a batch of training images and
makes two views of each: a chain of the query synthesizer's edits (:mod:`copydetect.synth`:
crops, overlays onto other training images, text, flips, rotations, colour, blur, JPEG, borders,
perspective, emoji clutter), then a random resized crop and a flip. The two views of one image
are a positive pair; a share of the first views is mixed with another image of the batch (mixup
or cutmix) and is then positive to both images, in proportion. The loss is InfoNCE over the 2N
views with those soft targets, plus the KoLeo entropy regularizer that spreads descriptors of
different images apart.

Determinism: every draw comes from a generator seeded by ``(seed, purpose)`` (the view of image
i in epoch e, the mixing of step s), never from a worker's state, the network's init is seeded,
and on the CPU torch runs its deterministic algorithms: same training shards and recipe → same
weights on the same machine. On CUDA, mixed precision (AMP) and cuDNN's autotuner trade that
for speed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import resource
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn
from torch.utils.data import DataLoader, Dataset

from copydetect import progress
from copydetect.atomic import atomic_path
from copydetect.descriptor_recipe import TrainedModel, TrainRecipe
from copydetect.embed import (
    EmbedError,
    EmbedParams,
    GemResNet,
    first_mismatch,
    normalize_keys,
    preprocess,
    read_checkpoint,
    unwrap_state_dict,
)
from copydetect.rng import purpose_rng
from copydetect.shards import read_shard_ids
from copydetect.synth import apply_edit_chain, fit_max_side

logger = logging.getLogger(__name__)

# Views are edited at up to this many times their final side: the edits cost ∝ pixels, and a
# 512 px image cut down to 224 px would spend most of its time on pixels that are thrown away.
EDIT_SIDE_FACTOR = 2
OPEN_SHARDS = 32  # h5 files a data-loader process keeps open (a 1M-image set has ~1000)


class DescriptorError(ValueError):
    """The training cannot start (no training images, a checkpoint that does not fit)."""


# --- Training images and their views -----------------------------------------------------


@dataclass(frozen=True)
class TrainingImages:
    """Where every training image is: its shard and row (arrays: a million images stay small)."""

    shards: tuple[str, ...]
    shard_of: np.ndarray  # int32 [n]: index into shards
    row_of: np.ndarray  # int32 [n]: row in that shard

    def __len__(self) -> int:
        return len(self.row_of)


def index_training_images(shard_paths: Sequence[str | Path]) -> TrainingImages:
    """The images of the training shards, in shard order then stored order."""
    counts = [len(read_shard_ids(path)) for path in shard_paths]
    if not sum(counts):
        raise DescriptorError("the training set has no images: a descriptor cannot be trained")
    shard_of = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    row_of = np.concatenate([np.arange(c, dtype=np.int32) for c in counts])
    return TrainingImages(tuple(map(str, shard_paths)), shard_of, row_of)


class ShardReader:
    """JPEG bytes by image index; each process opens its own h5 files (an open file must not
    cross a fork), the last ``OPEN_SHARDS`` of them kept open."""

    def __init__(self, images: TrainingImages) -> None:
        self.images = images
        self._files: OrderedDict[int, h5py.File] = OrderedDict()

    def jpeg(self, index: int) -> bytes:
        shard = int(self.images.shard_of[index])
        handle = self._files.pop(shard, None)
        if handle is None:
            handle = h5py.File(self.images.shards[shard], "r")
        self._files[shard] = handle
        if len(self._files) > OPEN_SHARDS:
            self._files.popitem(last=False)[1].close()
        return handle["jpeg"][int(self.images.row_of[index])].tobytes()

    def rgb(self, index: int, max_side: int) -> Image.Image:
        with Image.open(io.BytesIO(self.jpeg(index))) as im:
            return fit_max_side(im.convert("RGB"), max_side)


def random_resized_crop(img: Image.Image, rng: Any, size: int, min_area: float) -> Image.Image:
    """A window of ``min_area``..1 of the area (aspect 3:4..4:3) resized to ``size`` square;
    the whole image when ten draws do not fit (torchvision's RandomResizedCrop, seeded)."""
    width, height = img.size
    for _ in range(10):
        area = rng.uniform(min_area, 1.0) * width * height
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        crop_w, crop_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            x, y = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
            box = (x, y, x + crop_w, y + crop_h)
            return img.resize((size, size), Image.Resampling.BILINEAR, box=box)
    return img.resize((size, size), Image.Resampling.BILINEAR)


def make_view(
    img: Image.Image,
    rng: Any,
    recipe: TrainRecipe,
    background_for: Callable[[Any], tuple[str, Image.Image | None]],
) -> Image.Image:
    """One training view: a chain of synthesizer edits, a random resized crop, maybe a flip."""
    n_edits = rng.randint(recipe.min_edits, recipe.max_edits)
    edited, _ = apply_edit_chain(img, rng, n_edits, background_for)
    view = random_resized_crop(edited, rng, recipe.image_size, recipe.crop_min_area)
    return ImageOps.mirror(view) if rng.random() < 0.5 else view


def view_params(recipe: TrainRecipe) -> EmbedParams:
    """The embedding's preprocessing at the training size: views are normalized exactly as
    the resnet_gem backend normalizes the images it embeds."""
    return EmbedParams(resize="square", size=recipe.image_size)


class PairViews(Dataset):
    """Item ``(epoch, index)``: the image index and its two views, float32 ``[3, s, s]`` each."""

    def __init__(self, images: TrainingImages, recipe: TrainRecipe) -> None:
        self.images = images
        self.recipe = recipe
        self.params = view_params(recipe)
        self.max_side = EDIT_SIDE_FACTOR * recipe.image_size
        self._reader: ShardReader | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def reader(self) -> ShardReader:
        if self._reader is None:  # first use in this process
            self._reader = ShardReader(self.images)
        return self._reader

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, torch.Tensor, torch.Tensor]:
        epoch, index = key
        img = self.reader.rgb(index, self.max_side)
        views = []
        for view in (0, 1):
            rng = purpose_rng(self.recipe.seed, "view", epoch, index, view)
            edited = make_view(img, rng, self.recipe, self._backgrounds(index))
            views.append(preprocess(np.asarray(edited), self.params))
        return index, views[0], views[1]

    def _backgrounds(self, index: int) -> Callable[[Any], tuple[str, Image.Image | None]]:
        """Overlay backgrounds: another training image (a synthetic one with a single image)."""

        def pick(rng: Any) -> tuple[str, Image.Image | None]:
            if len(self.images) < 2:
                return "synthetic", None
            other = rng.randrange(len(self.images) - 1)
            other += other >= index
            return str(other), self.reader.rgb(other, self.max_side)

        return pick


def epoch_batches(n_images: int, recipe: TrainRecipe, epoch: int) -> list[list[tuple[int, int]]]:
    """The ``(epoch, index)`` keys of one epoch's batches: a seeded shuffle, cut to
    ``images_per_epoch``, in full batches (a batch never exceeds the images there are)."""
    order = list(range(n_images))
    purpose_rng(recipe.seed, "order", epoch).shuffle(order)
    order = order[: recipe.images_per_epoch or n_images]
    size = min(recipe.batch_size, len(order))
    full = len(order) // size * size  # the last partial batch is dropped: InfoNCE wants negatives
    return [[(epoch, i) for i in order[s : s + size]] for s in range(0, full, size)]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # a loader process decodes and edits; the main process computes


# --- Mixed views and the loss ------------------------------------------------------------


def mix_views(
    views: torch.Tensor, rng: Any, recipe: TrainRecipe
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a share of the views with another image's view of the batch (mixup or cutmix).

    Returns the views and their content ``[n, n]``: row i says how much of each image view i
    shows (the identity for unmixed views).
    """
    n, size = len(views), views.shape[-1]
    mixed, content = views.clone(), torch.eye(n)
    for i in range(n if n > 1 else 0):
        if rng.random() >= recipe.mix_probability:
            continue
        j = rng.randrange(n - 1)
        j += j >= i
        own = rng.random()  # share of image i
        if rng.random() < recipe.cutmix_share:
            side = min(size, round(size * math.sqrt(1.0 - own)))
            x, y = rng.randint(0, size - side), rng.randint(0, size - side)
            mixed[i, :, y : y + side, x : x + side] = views[j, :, y : y + side, x : x + side]
            own = 1.0 - side * side / (size * size)
        else:
            mixed[i] = own * views[i] + (1.0 - own) * views[j]
        content[i, i], content[i, j] = own, 1.0 - own
    return mixed, content


def soft_info_nce(z: torch.Tensor, overlap: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over all views: each view's target is the other views, weighted by how much
    image content they share (``overlap``, zero between different images)."""
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    shared = overlap.masked_fill(eye, 0.0)
    targets = shared / shared.sum(1, keepdim=True).clamp_min(1e-12)
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits.log_softmax(1).masked_fill(eye, 0.0)  # a view is not its own candidate
    return -(targets * log_prob).sum(1).mean()


def koleo(z: torch.Tensor, overlap: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo entropy estimate: −mean log distance of each view to the nearest view that shows
    none of its images (its positives would pull the other way)."""
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    squared = (2.0 - 2.0 * (z @ z.T)).clamp_min(eps)  # unit vectors: |a − b|² = 2 − 2 a·b
    squared = squared.masked_fill(eye | (overlap > 0), float("inf"))
    nearest = squared.min(1).values
    finite = torch.isfinite(nearest)
    if not bool(finite.any()):
        return z.sum() * 0.0
    return -0.5 * torch.log(nearest[finite]).mean()  # log of the distance = ½ log of its square


@dataclass(frozen=True)
class StepLoss:
    infonce: float
    koleo: float

    @property
    def total(self) -> float:
        return self.infonce + self.koleo


def descriptor_loss(
    z: torch.Tensor, content: torch.Tensor, recipe: TrainRecipe
) -> tuple[torch.Tensor, StepLoss]:
    """The training loss of one batch's L2-normalized descriptors (first views, then second
    views) and the first views' content; the second views are never mixed."""
    n = z.shape[0] // 2
    rows = torch.cat([content, torch.eye(n)]).to(z.device)
    overlap = rows @ rows.T
    infonce = soft_info_nce(z, overlap, recipe.temperature)
    entropy = recipe.koleo_weight * koleo(z, overlap)
    return infonce + entropy, StepLoss(float(infonce.detach()), float(entropy.detach()))


# --- The network ---------------------------------------------------------------------------


def build_network(model: TrainedModel) -> GemResNet:
    """The resnet_gem network, seeded (random init) or its trunk from ``model.init``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model.recipe.seed)
        net = GemResNet(model.arch, model.gem_p, model.dim)
    if model.init:
        load_trunk(net, model.init, model.arch)
    return net


def load_trunk(net: GemResNet, path: str, arch: str) -> None:
    """Load a checkpoint's trunk (torchvision's ImageNet file, a resnet_gem or SSCD-style state
    dict; read weights-only) and its projection when that fits too."""
    try:
        state = normalize_keys(unwrap_state_dict(read_checkpoint(path), path))
    except EmbedError as exc:
        raise DescriptorError(str(exc)) from None
    trunk = {k: v for k, v in state.items() if not k.startswith("proj.")}
    mismatch = first_mismatch(net.backbone.state_dict(), trunk)
    if mismatch:
        problem, count = mismatch
        raise DescriptorError(f"{path} does not fit {arch}: {problem}; {count} mismatched key(s)")
    net.backbone.load_state_dict(trunk, strict=False)  # checked: only num_batches_tracked
    projection = {k.removeprefix("proj."): v for k, v in state.items() if k.startswith("proj.")}
    if (
        net.proj is not None
        and projection
        and not first_mismatch(net.proj.state_dict(), projection)
    ):
        net.proj.load_state_dict(projection)
    logger.info("trunk initialized from %s%s", path, " and projection" * bool(projection))


class NormalizedDescriptor(nn.Module):
    """The network with its L2 normalization: what the TorchScript export computes."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


def embed_images(
    net: nn.Module, images: Sequence[Image.Image], size: int, batch_size: int = 32
) -> np.ndarray:
    """L2-normalized descriptors (float32) of PIL images resized to ``size`` square, on CPU."""
    params = EmbedParams(resize="square", size=size)
    net = net.eval()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = [
                preprocess(np.asarray(im.convert("RGB")), params)
                for im in images[start : start + batch_size]
            ]
            rows.append(F.normalize(net(torch.stack(batch)), dim=1).numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 1), np.float32)


@dataclass(frozen=True)
class Separation:
    """How well descriptors tell edited copies from other images (copy i of source i)."""

    top1: float  # share of copies whose nearest source is their own
    pair_accuracy: float  # share of (copy, other source) pairs ranked below (copy, own source)
    margin: float  # mean over copies of sim(own) − max sim(other)


def separation(copies: np.ndarray, sources: np.ndarray) -> Separation:
    """Separation of copy descriptors ``[n, d]`` from their sources' ``[n, d]`` (row i ↔ i)."""
    sims = copies @ sources.T
    n = len(sims)
    own = np.diag(sims)
    other = ~np.eye(n, dtype=bool)
    others = np.where(other, sims, -np.inf)
    return Separation(
        top1=float(np.mean(sims.argmax(1) == np.arange(n))),
        pair_accuracy=float(np.sum((sims < own[:, None]) & other) / max(n * (n - 1), 1)),
        margin=float(np.mean(own - others.max(1))),
    )


# --- Training --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingOutputs:
    weights: str  # state dict the resnet_gem backend loads
    torchscript: str  # the network + L2 normalization, traced
    metrics: str  # JSON: losses per epoch, time, throughput


def amp_dtype(recipe: TrainRecipe, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: none on the CPU or with ``amp: off``."""
    if device.type != "cuda" or recipe.amp == "off":
        return None
    if recipe.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if recipe.amp == "bf16" else torch.float16


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def make_optimizer(
    net: nn.Module, recipe: TrainRecipe, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with a linear warm-up and a cosine decay, stepped per batch."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    total = recipe.epochs * steps_per_epoch
    warmup = min(total, round(recipe.warmup_epochs * steps_per_epoch))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total)
    )
    return optimizer, schedule


@contextlib.contextmanager
def deterministic_cpu(device: torch.device) -> Iterator[None]:
    """Deterministic algorithms while training on the CPU (restored afterwards); on CUDA the
    cuDNN autotuner instead (fixed view sizes: it pays off)."""
    before = torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.benchmark = benchmark


class Trainer:
    """One training run: the network, its optimizer, and the running losses."""

    def __init__(
        self,
        net: GemResNet,
        recipe: TrainRecipe,
        device: torch.device,
        steps_per_epoch: int,
    ) -> None:
        self.net = net.to(device).train()
        if device.type == "cuda":  # faster convolutions under AMP
            self.net = self.net.to(memory_format=torch.channels_last)
        self.recipe = recipe
        self.device = device
        self.dtype = amp_dtype(recipe, device)
        self.optimizer, self.schedule = make_optimizer(self.net, recipe, steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def step(self, views_a: torch.Tensor, views_b: torch.Tensor, step: int) -> StepLoss:
        """One optimizer step on a batch's two views (the first ones mixed here, seeded)."""
        mixed, content = mix_views(views_a, purpose_rng(self.recipe.seed, "mix", step), self.recipe)
        inputs = torch.cat([mixed, views_b]).to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast("cuda", self.dtype) if self.dtype else contextlib.nullcontext()
        with autocast:
            out = self.net(inputs)
        z = F.normalize(out.float(), dim=1)
        loss, parts = descriptor_loss(z, content, self.recipe)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        return parts


@dataclass
class EpochLog:
    """Mean losses of each epoch, and when the last progress line was written."""

    infonce: list[float]
    koleo: list[float]
    last_line: float


def _loader(
    dataset: PairViews, batches: list[list[tuple[int, int]]], recipe: TrainRecipe, pin: bool
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=recipe.num_workers,
        worker_init_fn=_worker_init,
        pin_memory=pin,
        prefetch_factor=4 if recipe.num_workers else None,
    )


def run_epochs(
    trainer: Trainer, dataset: PairViews, plan: list[list[list[tuple[int, int]]]]
) -> EpochLog:
    """Every planned step, with a progress line (images, rate, ETA) and the running loss at
    most every ``progress.PROGRESS_EVERY_S`` seconds."""
    batches = [batch for epoch in plan for batch in epoch]
    bounds = np.cumsum([len(epoch) for epoch in plan])
    counter = progress.Progress(sum(map(len, batches)), "training images", log=logger)
    log = EpochLog([], [], time.monotonic())
    sums = np.zeros(2)
    loader = _loader(dataset, batches, trainer.recipe, trainer.device.type == "cuda")
    for step, (_, views_a, views_b) in enumerate(loader):
        parts = trainer.step(views_a, views_b, step)
        sums += (parts.infonce, parts.koleo)
        counter.advance(len(views_a))
        epoch = int(np.searchsorted(bounds, step, side="right"))
        if step + 1 == bounds[epoch]:
            steps = len(plan[epoch])
            log.infonce.append(sums[0] / steps)
            log.koleo.append(sums[1] / steps)
            sums[:] = 0
        if time.monotonic() - log.last_line >= counter.every_s:
            log.last_line = time.monotonic()
            logger.info(
                "step %d / %d, epoch %d / %d, loss %.4f (InfoNCE %.4f + KoLeo %.4f), lr %.2e",
                step + 1, len(batches), epoch + 1, len(plan), parts.total, parts.infonce,
                parts.koleo, trainer.schedule.get_last_lr()[0],
            )  # fmt: skip
    counter.done()
    return log


def train_network(
    shard_paths: Sequence[str | Path], model: TrainedModel, device: torch.device
) -> tuple[GemResNet, dict[str, Any]]:
    """Train ``model`` on the images of the training shards; the network (on the CPU, eval
    mode) and the run's figures."""
    recipe = model.recipe
    images = index_training_images(shard_paths)
    plan = [epoch_batches(len(images), recipe, e) for e in range(recipe.epochs)]
    batch = len(plan[0][0])
    logger.info(
        "training %s (GeM p=%g, %d-d) on %d images: %d epochs of %d steps of %d images, %s",
        model.arch, model.gem_p, model.dim, len(images), recipe.epochs, len(plan[0]), batch, device,
    )  # fmt: skip
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    with deterministic_cpu(device):
        trainer = Trainer(build_network(model), recipe, device, len(plan[0]))
        log = run_epochs(trainer, PairViews(images, recipe), plan)
    seconds = time.perf_counter() - start
    seen = sum(len(b) for epoch in plan for b in epoch)
    figures = {
        "model": asdict(model),
        "recipe": asdict(recipe),
        "device": str(device),
        "amp": str(trainer.dtype).removeprefix("torch.") if trainer.dtype else "off",
        "training_images": len(images),
        "steps": sum(map(len, plan)),
        "images_seen": seen,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(_cpu_seconds() - cpu_start, 3),
        "images_per_second": round(seen / max(seconds, 1e-9), 2),
        "infonce_per_epoch": [round(x, 5) for x in log.infonce],
        "koleo_per_epoch": [round(x, 5) for x in log.koleo],
    }
    return trainer.net.to("cpu", memory_format=torch.contiguous_format).eval(), figures


def _cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children (the data-loader workers)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def write_outputs(
    net: GemResNet, figures: dict[str, Any], outputs: TrainingOutputs, image_size: int
) -> None:
    """The state dict, the TorchScript export and the figures, each written atomically."""
    state = {key: value.detach().cpu().clone() for key, value in net.state_dict().items()}
    with atomic_path(outputs.weights) as tmp:
        torch.save(state, tmp)
    example = torch.zeros(1, 3, image_size, image_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch ≥ 2.9 deprecates TorchScript; tracer notes
        traced = torch.jit.trace(NormalizedDescriptor(net).eval(), example)
        with atomic_path(outputs.torchscript) as tmp:
            torch.jit.save(traced, str(tmp))
    with atomic_path(outputs.metrics) as tmp:
        tmp.write_text(json.dumps(figures, indent=2) + "\n")


def train_descriptor(
    shard_paths: Sequence[str | Path],
    outputs: TrainingOutputs,
    model: TrainedModel,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train the descriptor of ``model`` on the training shards and write its files; returns
    the figures written to ``outputs.metrics``."""
    net, figures = train_network(shard_paths, model, torch.device(device))
    write_outputs(net, figures, outputs, model.recipe.image_size)
    logger.info(
        "trained in %.1f s (%.1f CPU s), %.1f images/s; weights %s",
        figures["seconds"], figures["cpu_seconds"], figures["images_per_second"], outputs.weights,
    )  # fmt: skip
    return figures
