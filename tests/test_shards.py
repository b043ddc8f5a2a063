"""Embedding shards and the isc2021 export."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from copydetect.shards import export_isc2021, read_embedding_shard, write_embedding_shard


def test_embedding_shard_round_trip_in_float16(tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    write_embedding_shard(tmp_path / "s.h5", ["a", "b", "ü"], vectors)
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["vectors"].dtype == np.float16
    shard = read_embedding_shard(tmp_path / "s.h5")
    assert shard.ids == ["a", "b", "ü"]
    np.testing.assert_allclose(shard.vectors, vectors, atol=1e-2)


def test_empty_shard_keeps_its_width_and_mismatch_is_an_error(tmp_path: Path) -> None:
    write_embedding_shard(tmp_path / "e.h5", [], np.zeros((0,)), dim=8)
    assert read_embedding_shard(tmp_path / "e.h5").vectors.shape == (0, 8)
    with pytest.raises(ValueError, match="2 ids but 1 vectors"):
        write_embedding_shard(tmp_path / "x.h5", ["a", "b"], np.zeros((1, 8)))
    assert not (tmp_path / "x.h5").exists()


def test_isc2021_export_concatenates_shards(tmp_path: Path) -> None:
    write_embedding_shard(tmp_path / "s0.h5", ["R1"], np.ones((1, 4)))
    write_embedding_shard(tmp_path / "s1.h5", [], np.zeros((0, 4)), dim=4)
    write_embedding_shard(tmp_path / "s2.h5", ["R2", "R3"], np.zeros((2, 4)))
    export_isc2021([tmp_path / "s0.h5", tmp_path / "s1.h5", tmp_path / "s2.h5"], tmp_path / "x.h5")
    with h5py.File(tmp_path / "x.h5") as f:
        assert list(f["image_names"].asstr()[:]) == ["R1", "R2", "R3"]
        assert f["vectors"].shape == (3, 4) and f["vectors"].dtype == np.float32
