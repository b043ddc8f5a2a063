"""Settings of a descriptor the workflow trains itself (``models.<name>: {backend: train}``).

Light on purpose (no torch): the rules read it while planning. A trained model is a torchvision
ResNet + GeM + linear projection (the ``resnet_gem`` backend's network), trained by rule
``train_descriptor`` (``copydetect.descriptor_training``) and then embedded like any
``resnet_gem`` model from the weights file that rule writes: :func:`embedding_spec` is the
``resnet_gem`` entry it stands for. The training recipe (``train``) and the network's shape
(``arch``, ``dim``, ``gem_p``, ``init``) retrain when changed; the embedding keys (``size``,
``scales``, ``batch_size`` …) re-embed only.

A trained entry is partial by design (``{backend: train}`` alone is valid), so, as for the
neural models of ``copydetect.embed``, the defaults live in these classes: they are the GPU
recipe. ``config/descriptor_cpu.yaml`` is the small CPU one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from copydetect.params import config_params

# Keys of a trained entry that only the embedding reads (passed on to resnet_gem as they are).
EMBEDDING_KEYS = ("resize", "size", "scales", "batch_size", "num_workers", "device", "fp16")
WEIGHTS_NAME = "descriptor.pt"
TORCHSCRIPT_NAME = "descriptor.torchscript.pt"
METRICS_NAME = "training.json"


class RecipeError(ValueError):
    """A trained model's settings the schema or the recipe refuses; the message names the key."""


@config_params(None, schema="/$defs/descriptor_recipe", error=RecipeError)
class TrainRecipe:
    """How a descriptor is trained (SSCD, Pizzi et al. 2022): the ``train`` key of its entry.

    The defaults are the GPU recipe (README "Training your own descriptor" gives its expected
    time); every draw comes from generators seeded by ``seed``.
    """

    epochs: int = 30
    images_per_epoch: int | None = None  # None: every training image once per epoch
    batch_size: int = 256  # images per step (two views each)
    image_size: int = 224  # square side of a training view
    lr: float = 0.001  # AdamW, for a batch of 256 (scaled linearly with batch_size)
    weight_decay: float = 1e-6
    warmup_epochs: float = 1.0
    temperature: float = 0.05  # InfoNCE
    koleo_weight: float = 3.0  # the entropy (KoLeo) regularizer's weight (SSCD: 30)
    mix_probability: float = 0.2  # share of first views mixed with another image of the batch
    cutmix_share: float = 0.5  # of the mixed views: cutmix (a pasted box), the rest mixup
    min_edits: int = 0  # synthesizer edits chained onto each view: min..max
    max_edits: int = 3
    crop_min_area: float = 0.25  # random resized crop after the edits: area share min..1
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # CUDA only: auto (bf16 where supported, else fp16) | bf16 | fp16 | off
    num_workers: int = 8  # data-loader processes decoding and editing the views

    def __post_init__(self) -> None:
        if self.min_edits > self.max_edits:
            raise RecipeError(
                f"train.min_edits ({self.min_edits}) exceeds train.max_edits ({self.max_edits})"
            )


@config_params(
    None, schema="/$defs/trained_model", read_elsewhere=EMBEDDING_KEYS, error=RecipeError
)
class TrainedModel:
    """A trained model's entry less its embedding keys: the network and its recipe."""

    backend: str = "train"
    arch: str = "resnet50"
    dim: int = 512  # projection width (SSCD: 512)
    gem_p: float = 3.0
    init: str = ""  # "" = random init; else a checkpoint (torchvision or resnet_gem keys)
    train: dict = dataclasses.field(default_factory=dict)

    @property
    def recipe(self) -> TrainRecipe:
        return TrainRecipe.from_mapping(self.train)  # type: ignore[attr-defined]


def trained_model(spec: Mapping[str, Any]) -> TrainedModel:
    """The network and recipe of a ``backend: train`` entry (embedding keys are dropped)."""
    return TrainedModel.from_mapping(spec)  # type: ignore[attr-defined]


def recipe_params(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What the training depends on, defaults filled in: rule train_descriptor's parameter (a
    change retrains; the embedding keys are not in it)."""
    model = trained_model(spec)
    return {**dataclasses.asdict(model), "train": dataclasses.asdict(model.recipe)}


def embedding_spec(spec: Mapping[str, Any], weights: str) -> dict[str, Any]:
    """The ``resnet_gem`` entry a trained model is embedded with: its network's shape, the
    weights file rule train_descriptor writes, and the entry's embedding keys."""
    model = trained_model(spec)
    shape = {"arch": model.arch, "dim": model.dim, "gem_p": model.gem_p}
    embedding = {key: spec[key] for key in EMBEDDING_KEYS if key in spec}
    return {"backend": "resnet_gem", "weights": weights, **shape, **embedding}
