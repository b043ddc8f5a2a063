"""HDF5 shard formats shared by every stage.

Image shard: ``ids`` (utf-8), ``jpeg`` (vlen uint8), ``orig_size`` (int32 [n, 2] = width, height).
SIFT shard: ``ids``, ``offsets`` (int64 [n+1]), ``keypoints`` (float32 [m, 4] = x, y, size,
angle), ``descriptors`` (uint8 [m, 128]), ``image_size`` (int32 [n, 2] of the image SIFT ran on).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import h5py
import numpy as np
from PIL import Image

from copydetect.atomic import atomic_path

STRING = h5py.string_dtype(encoding="utf-8")  # every id dataset; read back with .asstr()


@dataclass(frozen=True)
class ImageRecord:
    """One ingested image: its id, re-encoded JPEG bytes and its size before resizing."""

    id: str
    jpeg: bytes
    orig_size: tuple[int, int]  # (width, height) of the decoded original


@dataclass(frozen=True)
class SiftFeatures:
    """SIFT features of one image, in the coordinates of the image SIFT ran on."""

    id: str
    keypoints: np.ndarray  # float32 [k, 4]: x, y, size, angle
    descriptors: np.ndarray  # uint8 [k, 128], RootSIFT
    image_size: tuple[int, int]  # (width, height) of the image SIFT ran on


def write_image_shard(path: str | os.PathLike, records: Sequence[ImageRecord]) -> None:
    """Write an image shard atomically (an empty shard is valid: every image was rejected)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("ids", data=[r.id for r in records], dtype=STRING)
        jpeg = f.create_dataset("jpeg", (len(records),), dtype=h5py.vlen_dtype(np.uint8))
        for i, r in enumerate(records):
            jpeg[i] = np.frombuffer(r.jpeg, dtype=np.uint8)
        sizes = np.array([r.orig_size for r in records], dtype=np.int32).reshape(-1, 2)
        f.create_dataset("orig_size", data=sizes)


def read_shard_ids(path: str | os.PathLike) -> list[str]:
    """Ids of any shard (image, SIFT or embedding) in stored order."""
    with h5py.File(path, "r") as f:
        return [s.decode("utf-8") if isinstance(s, bytes) else s for s in f["ids"][:]]


def iter_image_records(path: str | os.PathLike) -> Iterator[ImageRecord]:
    """Yield the records of an image shard one at a time (memory bounded by one image)."""
    with h5py.File(path, "r") as f:
        ids = f["ids"].asstr()[:]
        sizes = f["orig_size"][:]
        for i, image_id in enumerate(ids):
            yield ImageRecord(
                image_id, f["jpeg"][i].tobytes(), (int(sizes[i, 0]), int(sizes[i, 1]))
            )


def decode_rgb(jpeg: bytes) -> np.ndarray:
    """Decode stored JPEG bytes to an RGB uint8 array [h, w, 3]."""
    with Image.open(io.BytesIO(jpeg)) as im:
        return np.asarray(im.convert("RGB"))


def _row_index(f: h5py.File, ids: Sequence[str], path: str | os.PathLike) -> dict[str, int]:
    """Row of each wanted id in a shard, in stored order (reads then move forward through the
    file); an id the shard lacks is an error naming the file."""
    index = {image_id: i for i, image_id in enumerate(f["ids"].asstr()[:])}
    missing = sorted(set(ids) - set(index))
    if missing:
        raise KeyError(f"{path}: {len(missing)} ids not in the shard, e.g. {missing[:3]}")
    return {image_id: index[image_id] for image_id in sorted(set(ids), key=index.__getitem__)}


def read_jpegs(path: str | os.PathLike, ids: Sequence[str]) -> dict[str, bytes]:
    """Stored JPEG bytes of the images ``ids`` of an image shard (only those rows are read)."""
    with h5py.File(path, "r") as f:
        jpeg = f["jpeg"]
        return {image_id: jpeg[i].tobytes() for image_id, i in _row_index(f, ids, path).items()}


def write_sift_shard(path: str | os.PathLike, features: Sequence[SiftFeatures]) -> None:
    """Write a SIFT shard atomically; per-image rows are concatenated and indexed by offsets."""
    counts = np.array([len(x.keypoints) for x in features], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    keypoints = np.concatenate([x.keypoints for x in features]) if features else np.zeros((0, 4))
    descriptors = (
        np.concatenate([x.descriptors for x in features]) if features else np.zeros((0, 128))
    )
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("ids", data=[x.id for x in features], dtype=STRING)
        f.create_dataset("offsets", data=offsets)
        f.create_dataset("keypoints", data=keypoints.astype(np.float32).reshape(-1, 4))
        f.create_dataset("descriptors", data=descriptors.astype(np.uint8).reshape(-1, 128))
        sizes = np.array([x.image_size for x in features], dtype=np.int32).reshape(-1, 2)
        f.create_dataset("image_size", data=sizes)


def read_sift_rows(path: str | os.PathLike, ids: Sequence[str]) -> dict[str, SiftFeatures]:
    """SIFT features of the images ``ids`` of a SIFT shard, read by offsets: memory follows
    the wanted images, not the shard."""
    with h5py.File(path, "r") as f:
        rows = _row_index(f, ids, path)
        offsets, sizes = f["offsets"][:], f["image_size"][:]
        keypoints, descriptors = f["keypoints"], f["descriptors"]
        return {
            image_id: SiftFeatures(
                image_id,
                keypoints[offsets[i] : offsets[i + 1]],
                descriptors[offsets[i] : offsets[i + 1]],
                (int(sizes[i, 0]), int(sizes[i, 1])),
            )
            for image_id, i in rows.items()
        }


def read_sift_shard(path: str | os.PathLike) -> list[SiftFeatures]:
    """Read every image's SIFT features of a shard."""
    with h5py.File(path, "r") as f:
        ids = f["ids"].asstr()[:]
        offsets = f["offsets"][:]
        keypoints = f["keypoints"][:]
        descriptors = f["descriptors"][:]
        sizes = f["image_size"][:]
    return [
        SiftFeatures(
            image_id,
            keypoints[offsets[i] : offsets[i + 1]],
            descriptors[offsets[i] : offsets[i + 1]],
            (int(sizes[i, 0]), int(sizes[i, 1])),
        )
        for i, image_id in enumerate(ids)
    ]


@dataclass(frozen=True)
class Embeddings:
    """Global descriptors of a set of images: ``vectors[i]`` belongs to ``ids[i]``."""

    ids: list[str]
    vectors: np.ndarray  # float32 in memory, [n, d]


def write_embedding_shard(
    path: str | os.PathLike, ids: Sequence[str], vectors: np.ndarray, dim: int | None = None
) -> None:
    """Write an embedding shard atomically: ``ids`` and ``vectors`` stored as float16.

    ``dim`` gives the width of an empty shard (no image), so every shard of a model agrees.
    """
    vectors = np.asarray(vectors, dtype=np.float16)
    if len(ids) == 0:
        vectors = vectors.reshape(0, dim if dim is not None else vectors.shape[-1])
    if vectors.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} ids but {vectors.shape[0]} vectors for {path}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("ids", data=list(ids), dtype=STRING)
        f.create_dataset("vectors", data=vectors)


def read_embedding_shard(path: str | os.PathLike) -> Embeddings:
    """Read an embedding shard (vectors converted to float32)."""
    with h5py.File(path, "r") as f:
        return Embeddings(list(f["ids"].asstr()[:]), f["vectors"][:].astype(np.float32))


def export_isc2021(shards: Sequence[str | os.PathLike], path: str | os.PathLike) -> None:
    """Concatenate embedding shards into the isc2021 HDF5 layout (``image_names``, ``vectors``)."""
    parts = [read_embedding_shard(s) for s in shards]
    ids = [i for p in parts for i in p.ids]
    vectors = np.concatenate([p.vectors for p in parts]) if parts else np.zeros((0, 0))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("image_names", data=ids, dtype=STRING)
        f.create_dataset("vectors", data=vectors.astype(np.float32))
