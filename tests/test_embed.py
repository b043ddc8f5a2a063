"""Neural embedding backends: shapes, normalization, batching, checkpoints, shard jobs."""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: every model here is random

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from torch import nn
from torch_threads import one_torch_thread  # noqa: F401 (autouse)

from copydetect.embed import (
    Embedder,
    EmbedError,
    EmbedParams,
    collate,
    embed_image_shard,
    esvit_to_timm,
    load_embedder,
    normalize_keys,
    plan_batches,
    preprocess,
    resized_size,
    run_batches,
)
from copydetect.shards import ImageRecord, read_embedding_shard, write_image_shard

ROOT = Path(__file__).resolve().parents[1]
# The tests script tiny models because users bring TorchScript files (SSCD ships them).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
# resnet50 at 64 px keeps every forward to milliseconds; square makes batches really batch.
SMALL = EmbedParams(size=64, resize="square", batch_size=4, num_workers=0)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Five crops of real photographs with different sizes and aspect ratios."""
    astronaut, coffee = skimage.data.astronaut(), skimage.data.coffee()
    crops = [astronaut[:120, :160], astronaut[100:260, 50:170], coffee[:90, :90]]
    crops += [coffee[50:170, 100:260], astronaut[200:320, 200:360]]
    return [np.ascontiguousarray(c) for c in crops]


@pytest.fixture(scope="module")
def small() -> object:
    return load_embedder(SMALL)


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_shard(path: Path, images: list[np.ndarray]) -> list[str]:
    records = [
        ImageRecord(f"R{i:03d}", jpeg_bytes(im), im.shape[1::-1]) for i, im in enumerate(images)
    ]
    write_image_shard(path, records)
    return [r.id for r in records]


# --- Parameters and preprocessing ----------------------------------------------------------


def test_from_mapping_rejects_unknown_and_invalid_keys() -> None:
    with pytest.raises(EmbedError, match=r"\['colour', 'sise'\]"):
        EmbedParams.from_mapping({"backend": "swin", "sise": 224, "colour": 1})
    with pytest.raises(EmbedError, match=r"backend: 'vgg' is not one of"):
        EmbedParams.from_mapping({"backend": "vgg"})
    with pytest.raises(EmbedError, match="onnx needs a weights file"):
        EmbedParams.from_mapping({"backend": "onnx"})
    params = EmbedParams.from_mapping({"scales": [1, 0.5], "mean": [0.5] * 3})
    assert params.scales == (1.0, 0.5) and params.mean == (0.5, 0.5, 0.5) and params.weights == ""


def test_short_side_resize_matches_torchvision() -> None:
    from torchvision.transforms import Resize

    params = EmbedParams(size=288)
    for w, h in [(640, 480), (480, 640), (1000, 333), (300, 300), (100, 50)]:
        expected = Resize(288)(Image.new("RGB", (w, h))).size
        assert resized_size(w, h, params) == expected
    assert resized_size(640, 480, replace(params, resize="square"), 0.5) == (144, 144)


def test_preprocess_formats() -> None:
    rgb = np.full((30, 40, 3), 255, np.uint8)
    x = preprocess(rgb, EmbedParams(size=20))
    assert x.shape == (3, 20, 26) and x.dtype == torch.float32
    np.testing.assert_allclose(x[:, 0, 0], (1 - np.array(SMALL.mean)) / np.array(SMALL.std), 1e-5)
    raw = preprocess(rgb, EmbedParams(backend="onnx", weights="m.onnx", input_format="nhwc_uint8"))
    assert raw.shape == (288, 384, 3) and raw.dtype == torch.uint8


def test_plan_batches_groups_by_shape_in_order() -> None:
    keys = ["a", "b", "a", "a", "b", "a"]
    assert plan_batches(keys, 2) == [[0, 2], [3, 5], [1, 4]]


def batch_embed(embedder: Embedder, images: list[np.ndarray]) -> np.ndarray:
    """Embeddings of in-memory RGB images through the shard job's batching (no files)."""
    params = embedder.params
    inputs = [[preprocess(rgb, params, s) for s in params.scales] for rgb in images]
    keys = [tuple(tuple(x.shape) for x in per_scale) for per_scale in inputs]
    batches = (
        collate([(i, inputs[i]) for i in batch]) for batch in plan_batches(keys, params.batch_size)
    )
    return run_batches(embedder, batches, len(images))


# --- ResNet-GeM -------------------------------------------------------------------------------


def test_resnet_gem_shapes_norms_and_warning(photos, caplog) -> None:
    with caplog.at_level("WARNING"):
        embedder = load_embedder(replace(SMALL, dim=16))
    assert "RANDOM weights" in caplog.text
    vectors = batch_embed(embedder, photos)
    assert vectors.shape == (5, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.dim == 16


def test_random_init_is_deterministic_and_batch_size_invariant(photos, small) -> None:
    vectors = batch_embed(small, photos)
    again = batch_embed(load_embedder(SMALL), photos)  # a second model: same seeded init
    assert np.array_equal(vectors, again)
    one_by_one = batch_embed(load_embedder(replace(SMALL, batch_size=1)), photos)
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-5)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-4  # different images, different vectors


def test_multi_scale_is_normalized_sum_of_scales(photos) -> None:
    params = replace(SMALL, resize="short_side")
    multi = batch_embed(load_embedder(replace(params, scales=(1.0, 0.5))), photos[:2])
    full = batch_embed(load_embedder(params), photos[:2])
    half = batch_embed(load_embedder(replace(params, size=32)), photos[:2])
    expected = full + half
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(multi, expected, atol=1e-5)


# --- Checkpoints ------------------------------------------------------------------------------


def torchvision_checkpoint(path: Path, seed: int = 5) -> dict[str, torch.Tensor]:
    """A DDP training checkpoint of a torchvision ResNet-50 (classifier included)."""
    import torchvision

    torch.manual_seed(seed)
    state = torchvision.models.resnet50(weights=None).state_dict()
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return state


def test_resnet_checkpoint_loads_through_prefixes(tmp_path, photos, small) -> None:
    path = tmp_path / "resnet.pth"
    state = torchvision_checkpoint(path)
    loaded = load_embedder(replace(SMALL, weights=str(path)))
    trunk = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assert all(torch.equal(loaded.module.backbone.state_dict()[k], v) for k, v in trunk.items())
    assert not np.allclose(batch_embed(loaded, photos[:1]), batch_embed(small, photos[:1]))


def test_mismatched_checkpoints_name_file_and_key(tmp_path) -> None:
    state = torchvision_checkpoint(tmp_path / "ok.pth")
    renamed = dict(state)
    renamed["layer1.0.conv1.kernel"] = renamed.pop("layer1.0.conv1.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(EmbedError, match=r"renamed\.pth .*missing key 'layer1\.0\.conv1\.weight'"):
        load_embedder(replace(SMALL, weights=str(tmp_path / "renamed.pth")))
    state["layer4.0.conv1.weight"] = state["layer4.0.conv1.weight"][:10]
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(
        EmbedError, match=r"shape\.pth .*wrong shape for 'layer4\.0\.conv1\.weight'"
    ):
        load_embedder(replace(SMALL, weights=str(tmp_path / "shape.pth")))
    with pytest.raises(EmbedError, match=r"missing key 'proj\.weight'.*set dim"):
        load_embedder(replace(SMALL, weights=str(tmp_path / "ok.pth"), dim=8))


def test_unreadable_weights_fail_clearly(tmp_path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(EmbedError, match=f"weights file not found: {re.escape(str(missing))}"):
        load_embedder(replace(SMALL, weights=str(missing)))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(EmbedError, match="cannot read weights file .*garbage.pth"):
        load_embedder(replace(SMALL, weights=str(garbage)))


def test_esvit_key_mapping() -> None:
    t = torch.zeros(1)
    esvit = {
        "module.backbone.layers.0.downsample.reduction.weight": t,
        "module.backbone.layers.2.downsample.norm.bias": t,
        "module.backbone.layers.3.blocks.1.attn.qkv.weight": t,
        "module.backbone.layers.0.blocks.0.attn.relative_position_index": t,
        "module.head.mlp.0.weight": t,
        "module.head_dense.last_layer.weight_g": t,
        "module.backbone.norm.weight": t,
    }
    assert sorted(esvit_to_timm(normalize_keys(esvit))) == [
        "layers.1.downsample.reduction.weight",
        "layers.3.blocks.1.attn.qkv.weight",
        "layers.3.downsample.norm.bias",
        "norm.weight",
    ]
    timm_layout = {"layers.1.downsample.reduction.weight": t}  # already timm: unchanged
    assert esvit_to_timm(timm_layout) == timm_layout


def test_esvit_checkpoint_loads_into_timm_swin(tmp_path, photos) -> None:
    import timm

    arch = "swin_tiny_patch4_window7_224"
    torch.manual_seed(123)
    reference = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True)
    teacher = {}  # EsViT's layout: official Swin under MultiCropWrapper's backbone./head.
    for key, value in reference.state_dict().items():
        key = re.sub(
            r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", key
        )
        teacher[f"backbone.{key}"] = value
    teacher["backbone.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49).long()
    teacher["head.mlp.0.weight"] = torch.zeros(16, 768)
    student = {f"module.{k}": torch.zeros_like(v) for k, v in teacher.items()}
    checkpoint = {"teacher": teacher, "student": student, "args": argparse.Namespace(arch="swin")}
    torch.save(checkpoint, tmp_path / "esvit.pth")

    params = EmbedParams(backend="swin", arch=arch, size=224, resize="square", weights="")
    embedder = load_embedder(replace(params, weights=str(tmp_path / "esvit.pth")))
    with torch.inference_mode():
        expected = reference.eval()(preprocess(photos[0], params)[None])
    expected = torch.nn.functional.normalize(expected, dim=1).numpy()
    np.testing.assert_allclose(batch_embed(embedder, photos[:1]), expected, atol=1e-5)


# --- TorchScript and ONNX ---------------------------------------------------------------------


class TinyNet(nn.Module):
    """Conv → ReLU → global average: the graph written by hand as ONNX below."""

    def __init__(self, nhwc_uint8: bool = False) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.nhwc_uint8 = nhwc_uint8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nhwc_uint8:
            x = x.permute(0, 3, 1, 2).float()
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, payload: bytes | str) -> bytes:
    payload = payload.encode() if isinstance(payload, str) else payload
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _value_info(name: str, elem_type: int, dims: list[int | str]) -> bytes:
    shape = b"".join(_bytes(1, _int(1, d) if isinstance(d, int) else _bytes(2, d)) for d in dims)
    return _bytes(1, name) + _bytes(2, _bytes(1, _int(1, elem_type) + _bytes(2, shape)))


def _node(op: str, inputs: list[str], output: str, attrs: bytes = b"") -> bytes:
    return b"".join(_bytes(1, i) for i in inputs) + _bytes(2, output) + _bytes(4, op) + attrs


def _ints_attr(name: str, values: list[int]) -> bytes:  # AttributeProto type INTS = 7
    return _bytes(5, _bytes(1, name) + b"".join(_int(8, v) for v in values) + _int(20, 7))


def _tensor(name: str, array: np.ndarray) -> bytes:  # float32 TensorProto with raw_data
    dims = b"".join(_int(1, d) for d in array.shape)
    return dims + _int(2, 1) + _bytes(8, name) + _bytes(9, array.astype(np.float32).tobytes())


def tiny_onnx(net: TinyNet) -> bytes:
    """The ONNX model of ``net``, protobuf written by hand: the ``onnx`` package (which
    ``torch.onnx.export`` needs) is not installed, onnxruntime only reads the format."""
    nodes, first = [], "x"
    if net.nhwc_uint8:  # Cast(to=FLOAT) then Transpose NHWC → NCHW
        nodes += [_node("Cast", ["x"], "xf", _bytes(5, _bytes(1, "to") + _int(3, 1) + _int(20, 2)))]
        nodes += [_node("Transpose", ["xf"], "xt", _ints_attr("perm", [0, 3, 1, 2]))]
        first = "xt"
    conv_attrs = _ints_attr("kernel_shape", [3, 3]) + _ints_attr("strides", [2, 2])
    nodes += [_node("Conv", [first, "w", "b"], "c", conv_attrs), _node("Relu", ["c"], "r")]
    nodes += [_node("GlobalAveragePool", ["r"], "p"), _node("Flatten", ["p"], "y")]
    inputs = (2, ["n", "h", "w", 3]) if net.nhwc_uint8 else (1, ["n", 3, "h", "w"])
    graph = b"".join(_bytes(1, n) for n in nodes) + _bytes(2, "tiny")
    graph += _bytes(5, _tensor("w", net.conv.weight.detach().numpy()))
    graph += _bytes(5, _tensor("b", net.conv.bias.detach().numpy()))
    graph += _bytes(11, _value_info("x", *inputs)) + _bytes(12, _value_info("y", 1, ["n", 8]))
    return _int(1, 8) + _bytes(2, "test") + _bytes(7, graph) + _bytes(8, _int(2, 17))


@pytest.mark.parametrize("input_format", ["nchw_float", "nhwc_uint8"])
def test_torchscript_and_onnx_agree_with_the_module(tmp_path, photos, input_format) -> None:
    net = TinyNet(nhwc_uint8=input_format == "nhwc_uint8").eval()
    torch.jit.script(net).save(str(tmp_path / "tiny.pt"))
    (tmp_path / "tiny.onnx").write_bytes(tiny_onnx(net))
    params = {"resize": "short_side", "input_format": input_format, "batch_size": 2}
    with torch.inference_mode():
        pre = EmbedParams(backend="onnx", weights="-", size=SMALL.size, **params)
        expected = np.stack([net(preprocess(p, pre)[None])[0].numpy() for p in photos])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    for backend, name in [("torchscript", "tiny.pt"), ("onnx", "tiny.onnx")]:
        weights = str(tmp_path / name)
        embedder = load_embedder(replace(SMALL, backend=backend, weights=weights, **params))
        assert embedder.dim == 8
        np.testing.assert_allclose(batch_embed(embedder, photos), expected, atol=1e-5)


def test_onnx_input_format_mismatch_says_what_to_set(tmp_path) -> None:
    (tmp_path / "uint8.onnx").write_bytes(tiny_onnx(TinyNet(nhwc_uint8=True)))
    params = replace(SMALL, backend="onnx", weights=str(tmp_path / "uint8.onnx"))
    with pytest.raises(EmbedError, match="set input_format: nhwc_uint8"):
        load_embedder(params)
    with pytest.raises(EmbedError, match="gives 8-d vectors, dim says 4"):
        load_embedder(replace(params, input_format="nhwc_uint8", dim=4))


# --- Shard jobs -------------------------------------------------------------------------------


def test_embed_image_shard_writes_float16_in_order(tmp_path, photos, small) -> None:
    ids = write_shard(tmp_path / "images.h5", photos)
    params = replace(SMALL, resize="short_side", num_workers=2)  # worker processes decode
    assert embed_image_shard(tmp_path / "images.h5", tmp_path / "emb.h5", params) == 5
    shard = read_embedding_shard(tmp_path / "emb.h5")
    assert shard.ids == ids and shard.vectors.shape == (5, 2048)
    import h5py

    with h5py.File(tmp_path / "emb.h5") as f:
        assert f["vectors"].dtype == np.float16
    decoded = [np.asarray(Image.open(io.BytesIO(jpeg_bytes(p))).convert("RGB")) for p in photos]
    in_memory = batch_embed(load_embedder(replace(params, num_workers=0)), decoded)
    np.testing.assert_allclose(shard.vectors, in_memory, atol=2e-3)  # float16 rounding


def test_empty_shard_writes_zero_rows(tmp_path, small) -> None:
    write_image_shard(tmp_path / "empty.h5", [])
    assert embed_image_shard(tmp_path / "empty.h5", tmp_path / "emb.h5", SMALL, small) == 0
    shard = read_embedding_shard(tmp_path / "emb.h5")
    assert shard.ids == [] and shard.vectors.shape == (0, 2048)


def run_rule_script(tmp_path: Path, model: dict) -> tuple[int, str]:
    """Run workflow_scripts/embed_shard.py with a stand-in ``snakemake`` object."""
    driver = textwrap.dedent(
        f"""
        import runpy, types

        class Named(dict):
            __getattr__ = dict.__getitem__

        snakemake = types.SimpleNamespace(
            input=Named(shard={str(tmp_path / "images.h5")!r}),
            output=Named(embeddings={str(tmp_path / "emb.h5")!r}),
            params=Named(model={model!r}, gpu_lock_dir={str(tmp_path / "locks")!r}),
            log=[{str(tmp_path / "job.log")!r}],
            threads=1,
            resources=Named(gpu=0),
            wildcards=Named(model="tiny"),
        )
        runpy.run_path({str(ROOT / "workflow_scripts" / "embed_shard.py")!r},
                       init_globals={{"snakemake": snakemake}}, run_name="__main__")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow_scripts"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True)
    return proc.returncode, (tmp_path / "job.log").read_text()


def test_rule_script_embeds_and_fails_cleanly(tmp_path, photos) -> None:
    write_shard(tmp_path / "images.h5", photos[:2])
    torch.jit.script(TinyNet().eval()).save(str(tmp_path / "tiny.pt"))
    model = {
        "backend": "torchscript",
        "weights": str(tmp_path / "tiny.pt"),
        "size": 32,
        "num_workers": 0,
    }
    code, log = run_rule_script(tmp_path, model)  # the model's config entry, as rule embed_images
    assert code == 0, log
    assert read_embedding_shard(tmp_path / "emb.h5").vectors.shape == (2, 8)
    code, log = run_rule_script(tmp_path, {**model, "weights": str(tmp_path / "gone.pt")})
    assert code == 1 and "weights file not found" in log and "Traceback" not in log
