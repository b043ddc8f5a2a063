"""SIFT stage: OpenCV SIFT keypoints with uint8 RootSIFT descriptors, one image shard at a time.

Every image is converted to gray and shrunk so its short side is at most
``SiftParams.max_short_side`` (the ISC2021 image-fingerprint baseline works at 300 px: enough
detail for copies, and a bounded cost per image). The strongest ``max_keypoints`` keypoints by
response are kept in a deterministic order; keypoint coordinates are those of the shrunk image.

Images with fewer than ``min_keypoints`` keypoints (flat colors, tiny images) are kept with what
they have and listed in the shard's sparse table: they are a data property, not an error.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from copydetect.atomic import atomic_path
from copydetect.params import config_params
from copydetect.progress import Progress
from copydetect.shards import (
    SiftFeatures,
    iter_image_records,
    read_shard_ids,
    read_sift_shard,
    write_sift_shard,
)

logger = logging.getLogger(__name__)

# Keeps L1 normalization finite for an all-zero descriptor (it stays all-zero).
_EPS = 1e-7


# sift.mirror is read by rule mirror_sift alone (not a parameter of a SIFT run).
@config_params("sift", read_elsewhere=("mirror",))
class SiftParams:
    """Parameters of the SIFT stage (the ``sift`` section of the config)."""

    max_short_side: int
    max_keypoints: int
    min_keypoints: int
    contrast_threshold: float
    edge_threshold: float


@dataclass
class SiftSummary:
    """What one SIFT shard job did: image count and the sparse images with their counts."""

    n_images: int = 0
    sparse: dict[str, int] = field(default_factory=dict)  # id -> keypoint count

    @property
    def n_sparse(self) -> int:
        return len(self.sparse)

    @property
    def sparse_ids(self) -> list[str]:
        return list(self.sparse)


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelović & Zisserman 2012) quantized to uint8.

    L1-normalize, take the square root: the result has unit L2 norm, so Euclidean distance on
    it is the Hellinger kernel on the original histograms. Entries lie in [0, 1], so ×255 and
    rounding fits uint8 without saturating, and ``v / 255`` has L2 norm ≈ 1.
    """
    desc = np.asarray(descriptors, dtype=np.float32).reshape(-1, 128)
    desc = np.maximum(desc, 0.0)  # SIFT histograms are non-negative; guard against noise
    l1 = desc.sum(axis=1, keepdims=True) + _EPS
    return np.rint(np.sqrt(desc / l1) * 255.0).astype(np.uint8)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Gray uint8 [h, w] from an RGB [h, w, 3] or already gray [h, w] array."""
    if image.ndim == 2:
        return np.ascontiguousarray(image, dtype=np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2GRAY)


def decode_gray(jpeg: bytes) -> np.ndarray:
    """Decode stored JPEG bytes straight to gray (libjpeg skips the chroma: faster than RGB).

    EXIF orientation is ignored, as in :func:`copydetect.shards.decode_rgb`: ingest already
    applied it to the pixels.
    """
    buf = np.frombuffer(jpeg, dtype=np.uint8)
    gray = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    if gray is None:
        raise ValueError("could not decode stored JPEG")
    return gray


def shrink(gray: np.ndarray, max_short_side: int) -> np.ndarray:
    """Scale down (never up) so the short side is at most ``max_short_side`` (INTER_AREA)."""
    h, w = gray.shape[:2]
    short = min(h, w)
    if short <= max_short_side:
        return gray
    scale = max_short_side / short
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def make_detector(params: SiftParams) -> cv2.SIFT:
    """An OpenCV SIFT detector; ``nfeatures`` makes OpenCV drop weak keypoints *before*
    computing descriptors, which is most of the saving of the keypoint cap."""
    return cv2.SIFT_create(
        nfeatures=params.max_keypoints,
        contrastThreshold=params.contrast_threshold,
        edgeThreshold=params.edge_threshold,
    )


def keypoint_array(kps: Sequence[cv2.KeyPoint]) -> np.ndarray:
    """float32 [k, 4] of x, y, size, angle (KeyPoint_convert does x, y in C++: faster)."""
    size = np.fromiter((k.size for k in kps), np.float32, len(kps))
    angle = np.fromiter((k.angle for k in kps), np.float32, len(kps))
    return np.column_stack([cv2.KeyPoint_convert(kps), size, angle]).astype(np.float32)


def extract_sift(
    image: np.ndarray,
    params: SiftParams,
    image_id: str = "",
    detector: cv2.SIFT | None = None,
) -> SiftFeatures:
    """SIFT features of an RGB or gray image, in the coordinates of the shrunk gray image.

    Keypoints are sorted by response (descending), then x, y, size, angle, and cut to
    ``max_keypoints``: OpenCV keeps all keypoints tied at its cut-off response and its
    multi-threaded detection may emit them in any order, so the sort makes output deterministic.
    """
    gray = shrink(to_gray(image), params.max_short_side)
    detector = detector or make_detector(params)
    kps, desc = detector.detectAndCompute(gray, None)
    h, w = gray.shape
    if not kps:
        empty_kp = np.zeros((0, 4), np.float32)
        return SiftFeatures(image_id, empty_kp, np.zeros((0, 128), np.uint8), (w, h))
    geometry = keypoint_array(kps)
    response = np.fromiter((k.response for k in kps), np.float32, len(kps))
    # np.lexsort sorts by the last key first.
    order = np.lexsort((geometry[:, 3], geometry[:, 2], geometry[:, 1], geometry[:, 0], -response))
    order = order[: params.max_keypoints]
    return SiftFeatures(image_id, geometry[order], root_sift(desc[order]), (w, h))


def flipped_features(
    image: np.ndarray,
    params: SiftParams,
    image_id: str = "",
    detector: cv2.SIFT | None = None,
) -> SiftFeatures:
    """SIFT of the left-right mirrored image (RGB or gray), described from the mirrored pixels:
    a real SIFT run, as a mirrored copy of the image would get."""
    return extract_sift(np.ascontiguousarray(image[:, ::-1]), params, image_id, detector)


# A SIFT descriptor is 4 × 4 cells (rows follow the keypoint's frame y axis) × 8 orientation
# bins measured from the keypoint's angle. Mirroring the image left-right reverses angles
# relative to the keypoint (bin k -> -k) and turns the frame's y axis over (rows reversed).
_MIRRORED_BINS = (-np.arange(8)) % 8


def mirror_descriptors(descriptors: np.ndarray) -> np.ndarray:
    """Descriptors of the same patches in the left-right mirrored image (a permutation)."""
    cells = np.asarray(descriptors).reshape(-1, 4, 4, 8)[:, ::-1, :, :][..., _MIRRORED_BINS]
    return np.ascontiguousarray(cells).reshape(-1, 128)


def mirror_features(features: SiftFeatures) -> SiftFeatures:
    """SIFT features of the left-right mirrored image from the image's own, without a new
    detection: x -> w - 0.5 - x, angle -> 180° - angle, descriptors permuted. Most keypoints are
    where OpenCV finds them in the mirrored pixels, their descriptors the nearest neighbour of
    OpenCV's there (tests/test_sift.py), for ~1 % of a SIFT run's CPU.

    Why w - 0.5: OpenCV detects on the image upscaled 2x (pixel centres on integers there), and
    reports positions halved: column X of the 2w-wide upscaled image mirrors to 2w - 1 - X.
    """
    keypoints = np.array(features.keypoints, dtype=np.float32, copy=True).reshape(-1, 4)
    keypoints[:, 0] = features.image_size[0] - 0.5 - keypoints[:, 0]
    keypoints[:, 3] = (180.0 - keypoints[:, 3]) % 360.0
    descriptors = mirror_descriptors(features.descriptors)
    return SiftFeatures(features.id, keypoints, descriptors, features.image_size)


def mirror_sift_shard(sift_path: str | os.PathLike, out_path: str | os.PathLike) -> int:
    """Write the mirrored features (:func:`mirror_features`) of every image of a SIFT shard,
    in the shard's order; returns the image count."""
    features = [mirror_features(f) for f in read_sift_shard(sift_path)]
    write_sift_shard(out_path, features)
    logger.info("%s mirrored by permutation: %d images", sift_path, len(features))
    return len(features)


def sift_shard(
    image_shard_path: str | os.PathLike,
    out_path: str | os.PathLike,
    params: SiftParams,
    mirrored: bool = False,
) -> SiftSummary:
    """Extract SIFT for every image of an image shard (of its left-right mirror when
    ``mirrored``) and write the SIFT shard atomically.

    Memory is bounded by one decoded image plus the shard's features (≤ ``max_keypoints``
    × 144 bytes per image).
    """
    cv2.setNumThreads(1)  # one job per shard is the parallelism; threads would oversubscribe
    detector = make_detector(params)
    describe = flipped_features if mirrored else extract_sift
    features: list[SiftFeatures] = []
    summary = SiftSummary()
    progress = Progress(len(read_shard_ids(image_shard_path)), "images", log=logger)
    for record in iter_image_records(image_shard_path):
        feats = describe(decode_gray(record.jpeg), params, record.id, detector)
        features.append(feats)
        summary.n_images += 1
        if len(feats.keypoints) < params.min_keypoints:
            summary.sparse[record.id] = len(feats.keypoints)
        progress.advance()
    progress.done()
    write_sift_shard(out_path, features)
    logger.info(
        "%s%s: %d images, %d keypoints, %d sparse (< %d keypoints)",
        image_shard_path,
        " mirrored" if mirrored else "",
        summary.n_images,
        sum(len(f.keypoints) for f in features),
        summary.n_sparse,
        params.min_keypoints,
    )
    return summary


def write_sparse_table(summary: SiftSummary, path: str | os.PathLike) -> None:
    """Write ``id,n_keypoints`` for the sparse images (header always, so empty is valid)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "n_keypoints"])
        writer.writerows(summary.sparse.items())
