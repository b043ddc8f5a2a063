"""The layout descriptor: invariances, copies vs other images, featureless images, the shard job."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from featureless_images import featureless_images
from image_helpers import jpeg_bytes
from workflow_helpers import photo_tiles

from copydetect.layout import (
    LayoutImage,
    LayoutParams,
    embed_layout_shard,
    fine_detail,
    layout_vector,
)
from copydetect.params import ConfigError
from copydetect.shards import ImageRecord, read_embedding_shard, write_image_shard

PARAMS = LayoutParams()


def jpeg_round_trip(rgb: np.ndarray, quality: int = 50) -> np.ndarray:
    ok, buffer = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buffer, cv2.IMREAD_COLOR)[:, :, ::-1]


@pytest.fixture(scope="module")
def tiles() -> list[np.ndarray]:
    return [np.asarray(tile) for tile in photo_tiles(12)]


def test_vector_is_unit_length_with_the_configured_width(tiles: list[np.ndarray]) -> None:
    vector = layout_vector(tiles[0], PARAMS)
    assert vector.dtype == np.float32 and vector.shape == (PARAMS.dim,)
    assert PARAMS.dim == sum(3 * g * g for g in PARAMS.grids)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_a_mirrored_copy_has_the_same_vector(tiles: list[np.ndarray]) -> None:
    for tile in tiles[:4]:
        mirrored = np.ascontiguousarray(tile[:, ::-1])
        np.testing.assert_allclose(
            layout_vector(tile, PARAMS), layout_vector(mirrored, PARAMS), atol=1e-5
        )


def test_edited_copies_are_closer_than_any_other_image(tiles: list[np.ndarray]) -> None:
    """JPEG, a brightness shift, a resize, grayscale: the copy stays the nearest image."""
    others = np.stack([layout_vector(t, PARAMS) for t in tiles])
    for i, tile in enumerate(tiles[:6]):
        edits = [
            jpeg_round_trip(tile, 30),
            np.clip(tile.astype(np.int16) + 25, 0, 255).astype(np.uint8),
            cv2.resize(tile, (120, 100), interpolation=cv2.INTER_AREA),
            np.repeat(cv2.cvtColor(tile, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2),
        ]
        for edited in edits:
            sims = others @ layout_vector(edited, PARAMS)
            assert int(np.argmax(sims)) == i
            assert sims[i] > 0.8


def test_featureless_images_get_no_vector_even_after_jpeg() -> None:
    for name, image in featureless_images().items():
        for variant in (image, jpeg_round_trip(image, 50)):
            assert not layout_vector(variant, PARAMS).any(), name


def test_without_the_detail_floor_featureless_images_would_look_alike() -> None:
    """Why the floor exists: zero-mean + L2 keeps only a ramp's direction, so two ramps of
    unrelated colours (blue left-right, sunset top-down turned a quarter) get similarity
    0.92 (measured), as strong as a real copy's."""
    images = featureless_images()
    no_floor = LayoutParams(min_detail=0.0)
    blue = layout_vector(images["ramp_blue"], no_floor)
    turned_sunset = np.ascontiguousarray(np.rot90(images["ramp_sunset"]))
    assert float(blue @ layout_vector(turned_sunset, no_floor)) > 0.9
    assert not layout_vector(images["ramp_blue"], PARAMS).any()


def test_photographs_have_far_more_detail_than_featureless_images(
    tiles: list[np.ndarray],
) -> None:
    featureless = [fine_detail(LayoutImage.from_rgb(i)) for i in featureless_images().values()]
    photos = [fine_detail(LayoutImage.from_rgb(t)) for t in tiles]
    assert max(featureless) < PARAMS.min_detail < 2 * PARAMS.min_detail < min(photos)


def test_inconsistent_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        LayoutParams(grids=(4, 8), grid_weights=(1.0,))
    with pytest.raises(ValueError, match="even"):
        LayoutParams(grids=(4, 7), grid_weights=(1.0, 1.0))
    with pytest.raises(ConfigError):
        LayoutParams(chroma_weight=-1.0)


def test_shard_job_writes_one_vector_per_image_and_zero_for_featureless(
    tmp_path: Path, tiles: list[np.ndarray]
) -> None:
    blank = featureless_images()["near_blank"]
    images = {"P0": tiles[0], "P1": tiles[1], "B0": blank}
    records = [
        ImageRecord(image_id, jpeg_bytes(rgb), (rgb.shape[1], rgb.shape[0]))
        for image_id, rgb in images.items()
    ]
    write_image_shard(tmp_path / "s.h5", records)
    assert embed_layout_shard(tmp_path / "s.h5", tmp_path / "e.h5", PARAMS) == 3
    shard = read_embedding_shard(tmp_path / "e.h5")
    assert shard.ids == ["P0", "P1", "B0"] and shard.vectors.shape == (3, PARAMS.dim)
    assert shard.vectors[:2].any(axis=1).all() and not shard.vectors[2].any()
