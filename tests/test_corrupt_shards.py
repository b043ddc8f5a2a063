"""Corrupt shards (truncated, garbled, half-overwritten) are caught by every reader, moved
aside so the same command rebuilds them, and named in the error."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from copydetect.shards import (
    CorruptShardError,
    ImageRecord,
    SiftFeatures,
    iter_image_records,
    read_embedding_shard,
    read_jpegs,
    read_shard_ids,
    read_sift_rows,
    read_sift_shard,
    write_embedding_shard,
    write_image_shard,
    write_sift_shard,
)

RNG = np.random.default_rng(0)


def image_shard(path: Path) -> list[ImageRecord]:
    records = [
        ImageRecord(f"R{i}", bytes(RNG.integers(0, 256, 400, np.uint8)), (9, 9)) for i in range(3)
    ]
    write_image_shard(path, records)
    return records


def sift_shard(path: Path) -> list[SiftFeatures]:
    features = [
        SiftFeatures(
            f"R{i}",
            RNG.random((n, 4), dtype=np.float32),
            RNG.integers(0, 256, (n, 128), dtype=np.uint8),
            (64, 48),
        )
        for i, n in enumerate((5, 0, 7))
    ]
    write_sift_shard(path, features)
    return features


def embedding_shard(path: Path) -> None:
    write_embedding_shard(path, ["a", "b"], RNG.normal(size=(2, 16)))


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def garble(path: Path, needle: bytes) -> None:
    """Overwrite stored bytes in place: same size, same modification time."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0
    data[at : at + 8] = bytes(255 - b for b in data[at : at + 8])
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def assert_moved_aside(path: Path, error: pytest.ExceptionInfo) -> None:
    message = str(error.value)
    assert str(path) in message and "Run the same command again" in message
    assert not path.exists() and Path(f"{path}.corrupt").exists()


def test_intact_shards_read_back(tmp_path: Path) -> None:
    records = image_shard(tmp_path / "i.h5")
    features = sift_shard(tmp_path / "s.h5")
    assert list(iter_image_records(tmp_path / "i.h5")) == records
    assert read_jpegs(tmp_path / "i.h5", ["R2"]) == {"R2": records[2].jpeg}
    back = read_sift_shard(tmp_path / "s.h5")
    assert [f.descriptors.tolist() for f in back] == [f.descriptors.tolist() for f in features]
    assert read_sift_rows(tmp_path / "s.h5", ["R2"])["R2"].keypoints.tolist() == (
        features[2].keypoints.tolist()
    )


@pytest.mark.parametrize("make", [image_shard, sift_shard, embedding_shard])
def test_a_truncated_shard_is_caught_and_moved_aside(tmp_path: Path, make) -> None:
    path = tmp_path / "s0000.h5"
    make(path)
    truncate(path)
    with pytest.raises(CorruptShardError) as error:
        read_shard_ids(path)
    assert_moved_aside(path, error)


def test_garbled_image_bytes_are_caught(tmp_path: Path) -> None:
    path = tmp_path / "s0000.h5"
    records = image_shard(path)
    garble(path, records[1].jpeg[100:140])
    assert read_jpegs(path, ["R0"])  # the rows read are checked: R0 is intact
    with pytest.raises(CorruptShardError, match="checksum mismatch") as error:
        list(iter_image_records(path))
    assert_moved_aside(path, error)


def test_garbled_descriptors_are_caught_by_both_readers(tmp_path: Path) -> None:
    path = tmp_path / "s0000.h5"
    features = sift_shard(path)
    garble(path, features[2].descriptors.tobytes()[200:240])
    with pytest.raises(CorruptShardError, match="checksum mismatch"):
        read_sift_rows(path, ["R2"])
    Path(f"{path}.corrupt").rename(path)
    with pytest.raises(CorruptShardError) as error:
        read_sift_shard(path)
    assert_moved_aside(path, error)


def test_garbled_ids_or_vectors_are_caught(tmp_path: Path) -> None:
    path = tmp_path / "s0000.h5"
    embedding_shard(path)
    with h5py.File(path, "r") as f:
        stored = f["vectors"][:].tobytes()
    garble(path, stored[8:24])
    with pytest.raises(CorruptShardError, match="header checksum") as error:
        read_embedding_shard(path)
    assert_moved_aside(path, error)


def test_offsets_that_do_not_index_the_rows_are_caught(tmp_path: Path) -> None:
    path = tmp_path / "s0000.h5"
    sift_shard(path)
    with h5py.File(path, "a") as f:
        f["offsets"][-1] = 99  # a half-written shard: more rows promised than stored
    with pytest.raises(CorruptShardError, match="offsets"):
        read_sift_shard(path)
