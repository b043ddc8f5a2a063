"""VLAD over RootSIFT: sampling, codebook, encoding and the shard job, on real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import skimage.data

from copydetect.shards import SiftFeatures, read_embedding_shard, write_sift_shard
from copydetect.sift import SiftParams, extract_sift
from copydetect.vlad import (
    VladParams,
    allocate_quota,
    embed_sift_shard,
    fit_codebook,
    read_codebook,
    sample_descriptors,
    to_unit,
    vlad_encode,
    write_codebook,
)

PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "page",
    "brick",
    "horse",
)
SIFT = SiftParams()
SMALL = VladParams(codebook_size=16, iterations=10)


def as_uint8(image: np.ndarray) -> np.ndarray:
    """skimage ships a few images as bool or float; SIFT wants uint8."""
    if image.dtype == np.uint8:
        return image
    return (np.asarray(image, dtype=np.float64) * 255).clip(0, 255).astype(np.uint8)


def rotate_and_crop(image: np.ndarray, angle: float = 10.0, area: float = 0.8) -> np.ndarray:
    """A copy rotated by ``angle`` degrees about its center, then center-cropped to ``area``."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    rotated = cv2.warpAffine(image, matrix, (w, h))
    side = np.sqrt(area)
    ch, cw = int(h * side), int(w * side)
    y, x = (h - ch) // 2, (w - cw) // 2
    return rotated[y : y + ch, x : x + cw]


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: as_uint8(getattr(skimage.data, name)()) for name in PHOTOS}


@pytest.fixture(scope="module")
def features(photos: dict[str, np.ndarray]) -> list[SiftFeatures]:
    return [extract_sift(image, SIFT, name) for name, image in photos.items()]


@pytest.fixture(scope="module")
def centroids(features: list[SiftFeatures]) -> np.ndarray:
    return fit_codebook(np.concatenate([to_unit(f.descriptors) for f in features]), SMALL)


@pytest.fixture
def sift_shards(tmp_path: Path, features: list[SiftFeatures]) -> list[Path]:
    paths = [tmp_path / "b.h5", tmp_path / "a.h5", tmp_path / "c.h5"]
    write_sift_shard(paths[0], features[:2])
    write_sift_shard(paths[1], features[2:7])
    write_sift_shard(paths[2], features[7:])
    return paths


# --- parameters and sampling -------------------------------------------------------------------


def test_params_reject_unknown_keys_and_bad_power() -> None:
    assert VladParams.from_mapping({"codebook_size": 32}).dim == 32 * 128
    assert VladParams.from_mapping(None) == VladParams()
    with pytest.raises(ValueError, match="unknown models.vlad parameters"):
        VladParams.from_mapping({"codebooksize": 32})
    with pytest.raises(ValueError, match="power"):
        VladParams(power=0.0)


def test_quota_is_proportional_and_exact() -> None:
    assert allocate_quota([100, 300, 600], 100).tolist() == [10, 30, 60]
    quota = allocate_quota([1, 1, 1], 2)
    assert quota.tolist() == [1, 1, 0]  # remainder ties go to the earlier shard
    assert allocate_quota([5, 7], 100).tolist() == [5, 7]  # under budget: everything
    assert allocate_quota([0, 3, 997], 10).sum() == 10


def test_sampling_is_seeded_bounded_and_order_free(sift_shards: list[Path]) -> None:
    first = sample_descriptors(sift_shards, 1000, seed=3)
    again = sample_descriptors(list(reversed(sift_shards)), 1000, seed=3)
    other = sample_descriptors(sift_shards, 1000, seed=4)
    assert first.shape == (1000, 128) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # A sample of real RootSIFT rows: unit norm in the codebook space.
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=0.02)


def test_sampling_takes_everything_under_budget(
    sift_shards: list[Path], features: list[SiftFeatures]
) -> None:
    total = sum(len(f.descriptors) for f in features)
    sample = sample_descriptors(sift_shards, 10**9, seed=0)
    assert sample.shape == (total, 128)


# --- codebook ----------------------------------------------------------------------------------


def test_codebook_fit_is_deterministic(features: list[SiftFeatures], centroids: np.ndarray) -> None:
    refit = fit_codebook(np.concatenate([to_unit(f.descriptors) for f in features]), SMALL)
    assert centroids.shape == (16, 128) and centroids.dtype == np.float32
    np.testing.assert_array_equal(centroids, refit)


def test_codebook_needs_enough_points() -> None:
    with pytest.raises(ValueError, match="training descriptors"):
        fit_codebook(np.zeros((3, 128), np.float32), SMALL)


def test_codebook_round_trip(tmp_path: Path, centroids: np.ndarray) -> None:
    path = tmp_path / "codebook.h5"
    write_codebook(path, centroids, SMALL, n_training=1234)
    np.testing.assert_array_equal(read_codebook(path), centroids)
    with h5py.File(path, "r") as f:
        assert f.attrs["codebook_size"] == 16 and f.attrs["n_training_descriptors"] == 1234
    assert [p.name for p in tmp_path.iterdir()] == ["codebook.h5"]  # no temporary left


# --- encoding ----------------------------------------------------------------------------------


def test_encoding_is_unit_norm_of_width_k_times_128(
    features: list[SiftFeatures], centroids: np.ndarray
) -> None:
    vector = vlad_encode(features[0].descriptors, centroids)
    assert vector.shape == (16 * 128,) and vector.dtype == np.float32
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_image_without_descriptors_is_the_zero_vector(centroids: np.ndarray) -> None:
    vector = vlad_encode(np.zeros((0, 128), np.uint8), centroids)
    assert vector.shape == (16 * 128,) and not vector.any()


def test_hand_computed_residuals_and_power() -> None:
    centroids = np.zeros((2, 128), np.float32)
    centroids[1, 1] = 1.0
    desc = np.zeros((3, 128), np.uint8)
    desc[0, 0] = 255  # nearest to centroid 0 (the origin): residual e0
    desc[1, 1] = 255  # equal to centroid 1: residual 0
    desc[2, :2] = (51, 204)  # nearest to centroid 1: residual (0.2, -0.2)
    raw = vlad_encode(desc, centroids, power=1.0).reshape(2, 128)
    # Intra-normalization gives each non-empty block unit norm; the global L2 then 1/sqrt(2).
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(raw[0, :2], [s, 0.0], atol=1e-6)
    np.testing.assert_allclose(raw[1, :2], [s * s, -s * s], atol=1e-6)
    powered = vlad_encode(desc, centroids, power=0.5).reshape(-1)
    expected = np.sign(raw.reshape(-1)) * np.sqrt(np.abs(raw.reshape(-1)))
    np.testing.assert_allclose(powered, expected / np.linalg.norm(expected), atol=1e-6)


def test_bursts_do_not_dominate(features: list[SiftFeatures], centroids: np.ndarray) -> None:
    desc = features[0].descriptors
    bursty = np.concatenate([desc, np.repeat(desc[:1], 200, axis=0)])
    plain = vlad_encode(desc, centroids, power=1.0).reshape(16, 128)
    burst = vlad_encode(bursty, centroids, power=1.0).reshape(16, 128)
    # Every non-empty block keeps the same weight, however many descriptors it holds.
    np.testing.assert_allclose(np.linalg.norm(burst, axis=1), np.linalg.norm(plain, axis=1))


def test_rotated_cropped_copy_ranks_its_source_first(
    photos: dict[str, np.ndarray], features: list[SiftFeatures], centroids: np.ndarray
) -> None:
    database = np.stack([vlad_encode(f.descriptors, centroids) for f in features])
    for row, image in enumerate(photos.values()):
        query = extract_sift(rotate_and_crop(image, angle=10.0, area=0.8), SIFT)
        scores = database @ vlad_encode(query.descriptors, centroids)
        best_other = np.delete(scores, row).max()
        assert scores.argmax() == row, f"{PHOTOS[row]}: {scores.round(2)}"
        assert scores[row] - best_other > 0.1  # a clear margin, not a lucky tie


# --- shard job ---------------------------------------------------------------------------------


def test_embed_shard_round_trip(
    tmp_path: Path, features: list[SiftFeatures], centroids: np.ndarray
) -> None:
    codebook = tmp_path / "codebook.h5"
    write_codebook(codebook, centroids, SMALL, n_training=0)
    blank = SiftFeatures(
        "blank", np.zeros((0, 4), np.float32), np.zeros((0, 128), np.uint8), (9, 9)
    )
    write_sift_shard(tmp_path / "sift.h5", [features[0], blank, features[3]])
    out = tmp_path / "vlad.h5"
    assert embed_sift_shard(tmp_path / "sift.h5", codebook, out, SMALL) == 3
    embedded = read_embedding_shard(out)
    assert embedded.ids == ["astronaut", "blank", "rocket"]
    with h5py.File(out, "r") as f:
        assert f["vectors"].dtype == np.float16 and f["vectors"].shape == (3, 16 * 128)
    expected = vlad_encode(features[0].descriptors, centroids)
    np.testing.assert_allclose(embedded.vectors[0], expected, atol=1e-3)
    assert not embedded.vectors[1].any()


def test_embed_empty_shard_and_stale_codebook(tmp_path: Path, centroids: np.ndarray) -> None:
    codebook = tmp_path / "codebook.h5"
    write_codebook(codebook, centroids, SMALL, n_training=0)
    write_sift_shard(tmp_path / "empty.h5", [])
    assert embed_sift_shard(tmp_path / "empty.h5", codebook, tmp_path / "v.h5", SMALL) == 0
    assert read_embedding_shard(tmp_path / "v.h5").vectors.shape == (0, 16 * 128)
    with pytest.raises(ValueError, match="refit"):
        embed_sift_shard(tmp_path / "empty.h5", codebook, tmp_path / "w.h5", VladParams())


def test_too_few_descriptors_give_no_vector(features: list[SiftFeatures], centroids) -> None:
    """A featureless image (a handful of descriptors) gets the zero vector, not a VLAD vector
    that every other featureless image would share."""
    few = features[0].descriptors[:3]
    assert vlad_encode(few, centroids, min_descriptors=1).any()
    assert not vlad_encode(few, centroids, min_descriptors=4).any()
    assert vlad_encode(features[0].descriptors[:4], centroids, min_descriptors=4).any()
