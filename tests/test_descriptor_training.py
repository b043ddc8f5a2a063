"""The descriptor the workflow trains (SSCD recipe): it learns, it is deterministic, its files
load in the resnet_gem backend, and rule train_descriptor reruns exactly when it should."""

from __future__ import annotations

import io
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from script_runner import Named, run_script
from torch_threads import one_torch_thread  # noqa: F401 (autouse)
from workflow_helpers import photo_tiles, plan, snakemake, write_tiny_sets

from copydetect import progress
from copydetect.descriptor_recipe import (
    RecipeError,
    TrainRecipe,
    embedding_spec,
    recipe_params,
    trained_model,
)
from copydetect.descriptor_training import (
    DescriptorError,
    build_network,
    embed_images,
    epoch_batches,
    koleo,
    load_trunk,
    mix_views,
    separation,
    soft_info_nce,
    train_network,
)
from copydetect.embed import EmbedParams, load_embedder, preprocess
from copydetect.rng import purpose_rng
from copydetect.shards import ImageRecord, write_image_shard
from copydetect.synth import apply_edit_chain

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # TorchScript's deprecation

# A handful of 128 px photo tiles, trained on at 64 px: a few CPU-seconds per epoch.
N_IMAGES = 16
SIZE = 64


def tiny_spec(**train: object) -> dict:
    recipe = {"epochs": 1, "batch_size": 8, "image_size": 32, "num_workers": 0, **train}
    return {"backend": "train", "arch": "resnet18", "dim": 16, "train": recipe}


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiles() -> list[Image.Image]:
    return photo_tiles(N_IMAGES, 128)


@pytest.fixture(scope="module")
def training_shards(
    tiles: list[Image.Image], tmp_path_factory: pytest.TempPathFactory
) -> list[str]:
    """The tiles as two image shards, as ingest writes them."""
    folder = tmp_path_factory.mktemp("training")
    records = [ImageRecord(f"T{i:06d}", jpeg(t), t.size) for i, t in enumerate(tiles)]
    paths = [str(folder / "s0000.h5"), str(folder / "s0001.h5")]
    write_image_shard(paths[0], records[: N_IMAGES // 2])
    write_image_shard(paths[1], records[N_IMAGES // 2 :])
    return paths


def edited_copies(tiles: list[Image.Image]) -> list[Image.Image]:
    """One new edit (never drawn in training: another seed) of every tile."""
    copies = []
    for i, tile in enumerate(tiles):
        rng = purpose_rng(123, "copy", i)
        copy, _ = apply_edit_chain(tile, rng, rng.randint(1, 2), lambda r: ("synthetic", None))
        copies.append(copy)
    return copies


# --- It learns -----------------------------------------------------------------------------


def test_a_tiny_model_separates_edited_copies_better_than_its_random_init(
    tiles: list[Image.Image], training_shards: list[str]
) -> None:
    spec = tiny_spec(
        epochs=40, batch_size=N_IMAGES, image_size=SIZE, lr=0.003, max_edits=1, crop_min_area=0.5
    )
    spec["dim"] = 32
    model = trained_model(spec)
    copies = edited_copies(tiles)

    def measured(net: torch.nn.Module):
        return separation(embed_images(net, copies, SIZE), embed_images(net, tiles, SIZE))

    before = measured(build_network(model))
    net, figures = train_network(training_shards, model, torch.device("cpu"))
    after = measured(net)
    # Random features already rank most copies right, but by a hair: every descriptor is
    # nearly the same vector. Training must open a real gap between own source and others.
    assert after.margin > before.margin + 0.05, (before, after)
    assert after.top1 > before.top1 and after.pair_accuracy >= before.pair_accuracy
    assert figures["images_seen"] == 40 * N_IMAGES and figures["steps"] == 40
    assert len(figures["infonce_per_epoch"]) == 40


# --- Deterministic -------------------------------------------------------------------------


def test_same_data_and_seed_give_identical_weights_with_or_without_workers(
    training_shards: list[str],
) -> None:
    model = trained_model(tiny_spec(epochs=2, mix_probability=0.5))
    first, _ = train_network(training_shards, model, torch.device("cpu"))
    with_worker = replace(model, train={**model.train, "num_workers": 1})
    second, _ = train_network(training_shards, with_worker, torch.device("cpu"))
    reseeded = replace(model, train={**model.train, "seed": 1})
    third, _ = train_network(training_shards, reseeded, torch.device("cpu"))
    a, b, c = (net.state_dict() for net in (first, second, third))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(a["proj.weight"], c["proj.weight"])


def test_epochs_are_seeded_full_batches(training_shards: list[str]) -> None:
    recipe = TrainRecipe(batch_size=6, images_per_epoch=13)
    first = epoch_batches(N_IMAGES, recipe, 0)
    assert first == epoch_batches(N_IMAGES, recipe, 0)
    assert [len(b) for b in first] == [6, 6]  # 13 drawn, the partial batch dropped
    assert first != epoch_batches(N_IMAGES, recipe, 1)
    assert {epoch for batch in first for epoch, _ in batch} == {0}
    small = epoch_batches(5, recipe, 0)  # fewer images than a batch: one batch of all
    assert len(small) == 1 and sorted(i for _, i in small[0]) == list(range(5))


# --- The loss ------------------------------------------------------------------------------


def test_mixed_views_are_positive_to_both_images_in_proportion() -> None:
    views = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 8, 8).clone()
    recipe = TrainRecipe(mix_probability=1.0, cutmix_share=0.5)
    mixed, content = mix_views(views, purpose_rng(0, "mix"), recipe)
    assert torch.allclose(content.sum(1), torch.ones(4))
    for i in range(4):
        # A view's pixels are the content-weighted mean of the images' (constant) pixels.
        expected = float((content[i] * torch.arange(4.0)).sum())
        assert abs(float(mixed[i].mean()) - expected) < 1e-5
    assert (content > 0).sum() == 8  # each view: itself and one partner
    unmixed, identity = mix_views(views, purpose_rng(0, "mix"), TrainRecipe(mix_probability=0))
    assert torch.equal(unmixed, views) and torch.equal(identity, torch.eye(4))


def test_info_nce_without_mixing_is_the_usual_cross_entropy() -> None:
    z = F.normalize(torch.randn(8, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    rows = torch.cat([torch.eye(4), torch.eye(4)])
    loss = soft_info_nce(z, rows @ rows.T, temperature=0.1)
    logits = (z @ z.T / 0.1).fill_diagonal_(float("-inf"))
    positives = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])
    assert torch.allclose(loss, F.cross_entropy(logits, positives))


def test_koleo_ignores_positives_and_rewards_spread() -> None:
    rows = torch.cat([torch.eye(2), torch.eye(2)])
    overlap = rows @ rows.T
    close = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 0.0], [1.0, 0.1]]), dim=1)
    apart = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    # The two views of one image coincide; only the other image's distance counts.
    assert float(koleo(apart, overlap)) == pytest.approx(-np.log(np.sqrt(2.0)), abs=1e-5)
    assert float(koleo(close, overlap)) > float(koleo(apart, overlap))


# --- The network and its files ---------------------------------------------------------------


def test_a_trunk_checkpoint_starts_the_training(tmp_path: Path) -> None:
    import torchvision

    checkpoint = tmp_path / "resnet18.pth"
    imagenet_like = torchvision.models.resnet18(weights=None).state_dict()  # with its fc head
    torch.save(imagenet_like, checkpoint)
    model = trained_model({**tiny_spec(), "init": str(checkpoint)})
    net = build_network(model)
    assert torch.equal(net.backbone.conv1.weight, imagenet_like["conv1.weight"])
    wrong = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), wrong)
    with pytest.raises(DescriptorError, match="does not fit resnet18"):
        load_trunk(net, str(wrong), "resnet18")


def test_the_rule_script_writes_weights_the_resnet_gem_backend_loads(
    training_shards: list[str], tiles: list[Image.Image], tmp_path: Path
) -> None:
    spec = tiny_spec()
    outputs = Named(
        weights=str(tmp_path / "descriptor.pt"),
        torchscript=str(tmp_path / "descriptor.torchscript.pt"),
        metrics=str(tmp_path / "training.json"),
    )
    job = SimpleNamespace(
        input=Named(shards=training_shards, init=[]),
        output=outputs,
        log=[str(tmp_path / "train.log")],
        params=Named(recipe=recipe_params(spec), gpu_lock_dir=str(tmp_path / "locks")),
        wildcards=Named(model="mine"),
        resources=Named(gpu=1),
    )
    run_script("train_descriptor.py", job)
    log = (tmp_path / "train.log").read_text()
    assert "training images (100.0 %) done" in log and "torch device: cpu" in log
    figures = json.loads(Path(outputs.metrics).read_text())
    assert figures["training_images"] == N_IMAGES and figures["device"] == "cpu"

    entry = embedding_spec({**spec, "size": 48, "resize": "square"}, outputs.weights)
    assert entry["backend"] == "resnet_gem" and entry["dim"] == 16
    embedder = load_embedder(EmbedParams.from_mapping({**entry, "num_workers": 0}))
    batch = torch.stack([preprocess(np.asarray(t), embedder.params) for t in tiles[:3]])
    vectors = embedder.embed([batch])
    scripted = torch.jit.load(outputs.torchscript)
    with torch.inference_mode():
        exported = scripted(batch).numpy()
    assert vectors.shape == (3, 16)
    np.testing.assert_allclose(vectors, exported, atol=1e-5)


def test_progress_lines_name_step_rate_and_eta(
    training_shards: list[str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="copydetect"):
        train_network(training_shards, trained_model(tiny_spec(epochs=2)), torch.device("cpu"))
    text = caplog.text
    assert "8 / 32 training images (25.0 %)" in text and "ETA" in text
    assert "step 1 / 4, epoch 1 / 2, loss" in text


def test_settings_are_checked_naming_the_key() -> None:
    with pytest.raises(RecipeError, match=r"temperature: 0 is less than or equal"):
        trained_model({"backend": "train", "train": {"temperature": 0}})
    with pytest.raises(RecipeError, match="min_edits"):
        _ = trained_model({"backend": "train", "train": {"min_edits": 3, "max_edits": 1}}).recipe
    with pytest.raises(RecipeError, match="arch"):
        trained_model({"backend": "train", "arch": "vgg16"})
    defaults = recipe_params({"backend": "train"})
    assert defaults["arch"] == "resnet50" and defaults["dim"] == 512
    assert defaults["train"]["temperature"] == 0.05
    # The embedding keys re-embed, they do not retrain.
    assert recipe_params({"backend": "train", "size": 320}) == defaults


# --- The rule ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A run folder where only the descriptor is made: the training set's ingest + training."""
    root = tmp_path_factory.mktemp("rule")
    config = {
        **write_tiny_sets(root / "data"),
        "models": {"mine": tiny_spec(device="cpu")},
        "global": {"models": ["vlad", "mine"]},
    }
    result = snakemake(root / "run", config, "results/models/mine/descriptor.pt")
    assert result.returncode == 0, result.stdout[-5000:]
    return root, config


def test_the_trained_model_is_embedded_searched_and_fused(trained_run: tuple[Path, dict]) -> None:
    root, config = trained_run
    jobs = plan(root / "run", config)
    rules = {rule for rule, _ in jobs}
    assert "train_descriptor" not in rules
    embeds = {w.split(", shard=")[0] for rule, w in jobs if rule == "embed_images"}
    sets = ("queries", "crops_global", "references", "training")  # crops: overlay.detector
    assert embeds == {f"model=mine, set={name}" for name in sets}
    assert ("global_search", "model=mine, view=queries, shard=s0000") in jobs
    assert {"fit_normalization", "verify", "fuse"} <= rules


def test_what_retrains_the_descriptor(trained_run: tuple[Path, dict]) -> None:
    root, config = trained_run

    def trains(changed: dict) -> bool:
        jobs = plan(root / "run", changed, "results/models/mine/descriptor.pt")
        return ("train_descriptor", "model=mine") in jobs

    assert not trains(config)
    batch = root / "batch2"
    shutil.copytree(root / "data" / "queries", batch)
    assert not trains({**config, "queries": str(batch), "ground_truth": ""})
    mine = config["models"]["mine"]  # (embedding keys do not retrain: test_settings_...)
    recipe = {**mine["train"], "temperature": 0.1}
    assert trains({**config, "models": {"mine": {**mine, "train": recipe}}})
    more = root / "training2"
    shutil.copytree(root / "data" / "training", more)
    photo_tiles(25)[-1].save(more / "T900000.jpg")  # a tile no set has
    assert trains({**config, "training": str(more)})


def test_a_trained_model_needs_a_training_set(trained_run: tuple[Path, dict]) -> None:
    root, config = trained_run
    result = snakemake(root / "run", {**config, "training": ""}, "-n")
    assert result.returncode != 0
    assert "backend 'train' but the config has no training set" in result.stdout


def test_the_gpu_is_requested_unless_the_recipe_runs_on_the_cpu(
    trained_run: tuple[Path, dict],
) -> None:
    root, config = trained_run
    mine = config["models"]["mine"]
    on_gpu = {**config, "models": {"mine": {**mine, "train": {**mine["train"], "device": "auto"}}}}
    target = ("results/models/mine/descriptor.pt", "--forcerun", "train_descriptor")
    for settings, gpus in ((config, "gpu=0"), (on_gpu, "gpu=1")):
        result = snakemake(root / "run", settings, "-n", *target)
        assert result.returncode == 0, result.stdout[-3000:]
        block = result.stdout.split("rule train_descriptor:")[1].split("\n\n")[0]
        assert gpus in block, block
