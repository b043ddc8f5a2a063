"""Model files named in the config are loaded without running code from them.

Each test writes a ``.pt`` whose unpickling runs a shell command (it touches a marker file),
checks that a plain ``torch.load`` would indeed run it, then hands the file to a loader of the
workflow: the loader must refuse it with a message, and the marker must not appear.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
import torch

from copydetect.detector import DetectorError, load_detector
from copydetect.embed import EmbedError, EmbedParams, load_embedder


class RunsCode:
    """Unpickling this calls os.system: what a crafted checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    """(a crafted checkpoint, the marker file its unpickling creates), proven to run code."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "crafted.pt"
    torch.save({"model": RunsCode(marker), "state_dict": {}}, path)
    torch.load(path, weights_only=False)  # the control: a full unpickling runs the command
    assert marker.exists()
    marker.unlink()
    return path, marker


@pytest.mark.parametrize("backend", ["resnet_gem", "swin", "torchscript"])
def test_embedding_weights_cannot_run_code(crafted, backend: str) -> None:
    path, marker = crafted
    arch = {"resnet_gem": "resnet50", "swin": "swin_tiny_patch4_window7_224"}.get(backend)
    spec = {"backend": backend, "weights": str(path), "device": "cpu"}
    params = EmbedParams.from_mapping({**spec, **({"arch": arch} if arch else {})})
    with pytest.raises(EmbedError):
        load_embedder(params)
    assert not marker.exists()


def test_onnx_weights_cannot_run_code(crafted) -> None:
    path, marker = crafted
    params = EmbedParams.from_mapping({"backend": "onnx", "weights": str(path), "device": "cpu"})
    with pytest.raises(EmbedError):
        load_embedder(params)
    assert not marker.exists()


def test_detector_weights_cannot_run_code(crafted, tmp_path: Path) -> None:
    path, marker = crafted
    with pytest.raises(DetectorError, match="overlay.detector .* was refused"):
        load_detector(path, tmp_path / "yolo_config")
    assert not marker.exists()
