"""SIFT stage: RootSIFT quantization, extraction limits and determinism, shard jobs."""

from __future__ import annotations

import csv
import io

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from copydetect.shards import ImageRecord, read_sift_shard, write_image_shard, write_sift_shard
from copydetect.sift import (
    SiftParams,
    decode_gray,
    extract_sift,
    flipped_features,
    mirror_features,
    mirror_sift_shard,
    root_sift,
    sift_shard,
    write_sparse_table,
)


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


def test_root_sift_is_unit_norm_uint8() -> None:
    rng = np.random.default_rng(0)
    raw = rng.gamma(0.5, 40.0, size=(200, 128)).astype(np.float32)
    out = root_sift(raw)
    assert out.dtype == np.uint8 and out.shape == (200, 128)
    norms = np.linalg.norm(out / 255.0, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=0.02)


def test_root_sift_is_monotone_per_descriptor() -> None:
    raw = np.arange(128, dtype=np.float32)[None, :] ** 2
    out = root_sift(raw)[0].astype(int)
    assert (np.diff(out) >= 0).all()
    assert out[0] == 0 and out[-1] > out[64]


def test_root_sift_does_not_saturate_or_fail_on_zeros() -> None:
    one_bin = np.zeros((1, 128), np.float32)
    one_bin[0, 5] = 512.0  # all the mass in one bin: sqrt(1) * 255 = 255 exactly
    assert root_sift(one_bin)[0, 5] == 255
    assert not root_sift(np.zeros((3, 128), np.float32)).any()


def test_extraction_respects_limits(astronaut: np.ndarray) -> None:
    params = SiftParams(max_short_side=200, max_keypoints=50)
    feats = extract_sift(astronaut, params, "a")
    assert feats.id == "a" and feats.image_size == (200, 200)
    assert len(feats.keypoints) == 50 and feats.descriptors.shape == (50, 128)
    assert feats.keypoints.dtype == np.float32 and feats.descriptors.dtype == np.uint8
    xy = feats.keypoints[:, :2]
    assert (xy >= 0).all() and (xy < 200).all()


def test_small_images_are_not_upscaled() -> None:
    small = skimage.data.astronaut()[::4, ::8]  # 128 × 64
    feats = extract_sift(small, SiftParams(max_short_side=300))
    assert feats.image_size == (64, 128)


def test_extraction_is_deterministic_across_thread_counts(astronaut: np.ndarray) -> None:
    params = SiftParams(max_keypoints=100)
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(4)
        many = extract_sift(astronaut, params)
        cv2.setNumThreads(1)
        one = extract_sift(astronaut, params)
    finally:
        cv2.setNumThreads(threads)
    np.testing.assert_array_equal(many.keypoints, one.keypoints)
    np.testing.assert_array_equal(many.descriptors, one.descriptors)


def test_gray_and_rgb_inputs_agree(astronaut: np.ndarray) -> None:
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    a = extract_sift(astronaut, SiftParams(max_keypoints=80))
    b = extract_sift(gray, SiftParams(max_keypoints=80))
    np.testing.assert_array_equal(a.descriptors, b.descriptors)


def test_sift_shard_writes_features_and_records_sparse(tmp_path, astronaut: np.ndarray) -> None:
    flat = np.full((120, 160, 3), 128, np.uint8)
    records = [
        ImageRecord("photo", jpeg_bytes(astronaut), (512, 512)),
        ImageRecord("flat", jpeg_bytes(flat), (160, 120)),
    ]
    write_image_shard(tmp_path / "images.h5", records)
    params = SiftParams(max_keypoints=100, min_keypoints=10)
    summary = sift_shard(tmp_path / "images.h5", tmp_path / "sift.h5", params)

    assert summary.n_images == 2 and summary.sparse_ids == ["flat"] and summary.n_sparse == 1
    stored = read_sift_shard(tmp_path / "sift.h5")
    assert [f.id for f in stored] == ["photo", "flat"]
    assert len(stored[1].keypoints) == summary.sparse["flat"] < 10
    direct = extract_sift(decode_gray(records[0].jpeg), params, "photo")
    np.testing.assert_array_equal(stored[0].descriptors, direct.descriptors)
    np.testing.assert_array_equal(stored[0].keypoints, direct.keypoints)

    write_sparse_table(summary, tmp_path / "sparse.csv")
    with open(tmp_path / "sparse.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["id", "n_keypoints"], ["flat", str(summary.sparse["flat"])]]


def test_mirrored_shard_is_sift_of_the_mirrored_pixels(tmp_path) -> None:
    astronaut = skimage.data.astronaut()
    records = [ImageRecord("photo", jpeg_bytes(astronaut), (512, 512))]
    write_image_shard(tmp_path / "images.h5", records)
    params = SiftParams(max_keypoints=100)
    sift_shard(tmp_path / "images.h5", tmp_path / "sift.h5", params)
    sift_shard(tmp_path / "images.h5", tmp_path / "mirrored.h5", params, mirrored=True)

    (stored,) = read_sift_shard(tmp_path / "mirrored.h5")
    gray = decode_gray(records[0].jpeg)
    direct = extract_sift(np.ascontiguousarray(gray[:, ::-1]), params, "photo")
    assert stored.id == "photo" and stored.image_size == direct.image_size
    np.testing.assert_array_equal(stored.descriptors, direct.descriptors)
    np.testing.assert_array_equal(stored.keypoints, direct.keypoints)
    again = flipped_features(gray, params, "photo")
    np.testing.assert_array_equal(again.keypoints, direct.keypoints)
    (unmirrored,) = read_sift_shard(tmp_path / "sift.h5")
    assert not np.array_equal(unmirrored.keypoints, stored.keypoints)


def test_empty_shard_and_header_only_sparse_table(tmp_path) -> None:
    write_image_shard(tmp_path / "images.h5", [])
    summary = sift_shard(tmp_path / "images.h5", tmp_path / "sift.h5", SiftParams())
    assert summary.n_images == 0 and read_sift_shard(tmp_path / "sift.h5") == []
    write_sparse_table(summary, tmp_path / "sparse.csv")
    assert (tmp_path / "sparse.csv").read_text().splitlines() == ["id,n_keypoints"]


def test_params_reject_unknown_keys() -> None:
    assert SiftParams.from_mapping({"max_keypoints": 5}).max_keypoints == 5
    with pytest.raises(ValueError, match="max_keypoint"):
        SiftParams.from_mapping({"max_keypoint": 5})


def test_permuted_mirror_matches_sift_of_the_mirrored_pixels() -> None:
    """sift.mirror permute: the image's SIFT mirrored (x, angle, bins) lands on what OpenCV
    computes from the flipped pixels: same positions, and most descriptors nearest to the
    flipped run's descriptor at that position."""
    image = skimage.data.astronaut()
    params = SiftParams(max_keypoints=300)
    permuted = mirror_features(extract_sift(image, params, "A"))
    described = flipped_features(image, params, "A")
    assert permuted.image_size == described.image_size
    # Nearest flipped-run keypoint of each permuted one, by position.
    gap = np.linalg.norm(permuted.keypoints[:, None, :2] - described.keypoints[None, :, :2], axis=2)
    same_place = gap.min(axis=1) < 0.01
    assert same_place.mean() > 0.5
    q = permuted.descriptors[same_place].astype(np.float32)
    r = described.descriptors.astype(np.float32)
    nearest = ((q[:, None, :] - r[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    assert (nearest == gap[same_place].argmin(axis=1)).mean() > 0.75
    # A wrong permutation (the identity: descriptors left as they are) does not land there.
    plain = extract_sift(image, params, "A").descriptors[same_place].astype(np.float32)
    wrong = ((plain[:, None, :] - r[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    assert (wrong == gap[same_place].argmin(axis=1)).mean() < 0.3


def test_mirroring_twice_is_the_identity_and_the_shard_keeps_its_order(tmp_path) -> None:
    image = skimage.data.coffee()
    features = [extract_sift(image, SiftParams(max_keypoints=50), i) for i in ("b", "a")]
    twice = mirror_features(mirror_features(features[0]))
    np.testing.assert_array_equal(twice.descriptors, features[0].descriptors)
    np.testing.assert_allclose(twice.keypoints, features[0].keypoints, atol=1e-3)
    write_sift_shard(tmp_path / "sift.h5", features)
    assert mirror_sift_shard(tmp_path / "sift.h5", tmp_path / "mirrored.h5") == 2
    stored = read_sift_shard(tmp_path / "mirrored.h5")
    assert [f.id for f in stored] == ["b", "a"]
    expected = mirror_features(features[1])
    np.testing.assert_array_equal(stored[1].descriptors, expected.descriptors)
    np.testing.assert_array_equal(stored[1].keypoints, expected.keypoints)
