"""Which torch device a job computes on, from a config's ``device`` (auto | cpu | a CUDA name).

faiss picks its own (:class:`copydetect.knn.Device`); the GPU itself is leased by
:mod:`copydetect.gpu`.
"""

from __future__ import annotations


class DeviceError(ValueError):
    """The configured device does not exist on this machine."""


def resolve_device(requested: str, leased: bool = True, gpu: str = "cuda") -> str:
    """``"cpu"`` or a CUDA device name for torch (``gpu``, e.g. ultralytics' ``"0"``).

    ``auto`` takes ``gpu`` when torch sees CUDA and the job holds a GPU (``leased``), else the
    CPU; any name other than ``cpu`` and ``auto`` needs CUDA.
    """
    if requested == "cpu":
        return "cpu"
    import torch  # only jobs that run torch pay for its import

    cuda = torch.cuda.is_available()
    if requested == "auto":
        return gpu if cuda and leased else "cpu"
    if not cuda:
        raise DeviceError(f"device {requested!r} requested but torch sees no CUDA device")
    return requested
