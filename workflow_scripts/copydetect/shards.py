"""HDF5 shard formats shared by every stage.

Image shard: ``ids`` (utf-8), ``jpeg`` (vlen uint8), ``orig_size`` (int32 [n, 2] = width, height).
SIFT shard: ``ids``, ``offsets`` (int64 [n+1]), ``keypoints`` (float32 [m, 4] = x, y, size,
angle), ``descriptors`` (uint8 [m, 128]), ``image_size`` (int32 [n, 2] of the image SIFT ran on).
Embedding shard: ``ids``, ``vectors`` (float16 [n, d]).

Every shard carries CRC32 checksums, written with it and checked by every reader: the attribute
``header_crc32`` over the ids and the small per-image arrays, and for image and SIFT shards a
``row_crc32`` (uint32 [n]) over each image's payload, so a reader of a few rows checks just
those. A shard that fails a check is moved aside (``<name>.corrupt``) and the job stops with a
:class:`CorruptShardError`: the file is then missing, and the same command rebuilds it.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import h5py
import numpy as np
from PIL import Image

from copydetect.atomic import atomic_path

STRING = h5py.string_dtype(encoding="utf-8")  # every id dataset; read back with .asstr()


class CorruptShardError(ValueError):
    """A shard whose structure or checksums do not hold (truncated, garbled, half-written)."""


def _corrupt(path: str | os.PathLike, problem: str) -> CorruptShardError:
    """Move a corrupt shard aside, so that Snakemake sees it missing and rebuilds it, and say so.

    Its modification time cannot be trusted to trigger that: a copy with the time restored, or
    bytes overwritten in place, look up to date."""
    aside = f"{os.fspath(path)}.corrupt"
    try:
        os.replace(path, aside)
        action = f"it was moved to {aside}"
    except OSError as exc:
        action = f"moving it aside failed ({exc}): delete it"
    return CorruptShardError(
        f"{os.fspath(path)} is corrupt ({problem}); {action}. Run the same command again: "
        "Snakemake rebuilds the missing file and what depends on it"
    )


def _crc(*parts: bytes | np.ndarray) -> int:
    crc = 0
    for part in parts:
        data = part if isinstance(part, bytes) else np.ascontiguousarray(part).tobytes()
        crc = zlib.crc32(data, crc)
    return crc


def _ids_bytes(ids: Sequence[str]) -> bytes:
    return "\n".join(ids).encode("utf-8")


@contextmanager
def _open_shard(path: str | os.PathLike, datasets: Sequence[str]) -> Iterator[h5py.File]:
    """Open a shard for reading; an unreadable file, a missing dataset or an HDF5 read error
    anywhere inside the block is a :class:`CorruptShardError`."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise _corrupt(path, f"not a readable HDF5 file: {' '.join(str(exc).split())}") from None
    with f:
        missing = [name for name in datasets if name not in f]
        if missing:
            raise _corrupt(path, f"datasets {missing} are missing")
        try:
            yield f
        except (OSError, RuntimeError) as exc:  # h5py's errors on damaged chunks
            raise _corrupt(path, f"unreadable data: {' '.join(str(exc).split())}") from None


def _check_header(f: h5py.File, path: str | os.PathLike, *parts: bytes | np.ndarray) -> None:
    """The header checksum (shards written before checksums existed are taken as they are)."""
    expected = f.attrs.get("header_crc32")
    if expected is not None and int(expected) != _crc(*parts):
        raise _corrupt(path, "header checksum mismatch")


def _check_rows(path: str | os.PathLike, row_crc: np.ndarray | None, rows: dict[int, int]) -> None:
    """``rows`` maps a row to the CRC of what was read of it; compared with the stored ones."""
    if row_crc is None:
        return
    bad = [i for i, crc in rows.items() if int(row_crc[i]) != crc]
    if bad:
        raise _corrupt(path, f"checksum mismatch in {len(bad)} image(s), e.g. row {bad[0]}")


def _check_lengths(path: str | os.PathLike, expected: int, **arrays: object) -> None:
    wrong = {name: len(a) for name, a in arrays.items() if len(a) != expected}  # type: ignore[arg-type]
    if wrong:
        raise _corrupt(path, f"{expected} ids but lengths {wrong}")


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
    ids = [r.id for r in records]
    sizes = np.array([r.orig_size for r in records], dtype=np.int32).reshape(-1, 2)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("ids", data=ids, dtype=STRING)
        jpeg = f.create_dataset("jpeg", (len(records),), dtype=h5py.vlen_dtype(np.uint8))
        for i, r in enumerate(records):
            jpeg[i] = np.frombuffer(r.jpeg, dtype=np.uint8)
        f.create_dataset("orig_size", data=sizes)
        f.create_dataset("row_crc32", data=np.array([_crc(r.jpeg) for r in records], np.uint32))
        f.attrs["header_crc32"] = _crc(_ids_bytes(ids), sizes)


def _image_header(f: h5py.File, path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Checked ids and original sizes of an open image shard."""
    ids = list(f["ids"].asstr()[:])
    sizes = f["orig_size"][:]
    _check_lengths(path, len(ids), jpeg=f["jpeg"], orig_size=sizes)
    _check_header(f, path, _ids_bytes(ids), sizes.astype(np.int32))
    return ids, sizes


def _row_crcs(f: h5py.File) -> np.ndarray | None:
    return f["row_crc32"][:] if "row_crc32" in f else None


def read_shard_ids(path: str | os.PathLike) -> list[str]:
    """Ids of any shard (image, SIFT or embedding) in stored order."""
    with _open_shard(path, ["ids"]) as f:
        return [s.decode("utf-8") if isinstance(s, bytes) else s for s in f["ids"][:]]


def iter_image_records(path: str | os.PathLike) -> Iterator[ImageRecord]:
    """Yield the records of an image shard one at a time (memory bounded by one image)."""
    with _open_shard(path, ["ids", "jpeg", "orig_size"]) as f:
        ids, sizes = _image_header(f, path)
        row_crc = _row_crcs(f)
        for i, image_id in enumerate(ids):
            jpeg = f["jpeg"][i].tobytes()
            _check_rows(path, row_crc, {i: _crc(jpeg)})
            yield ImageRecord(image_id, jpeg, (int(sizes[i, 0]), int(sizes[i, 1])))


def decode_rgb(jpeg: bytes) -> np.ndarray:
    """Decode stored JPEG bytes to an RGB uint8 array [h, w, 3]."""
    with Image.open(io.BytesIO(jpeg)) as im:
        return np.asarray(im.convert("RGB"))


def _row_index(
    all_ids: Sequence[str], ids: Sequence[str], path: str | os.PathLike
) -> dict[str, int]:
    """Row of each wanted id in a shard, in stored order (reads then move forward through the
    file); an id the shard lacks is an error naming the file."""
    index = {image_id: i for i, image_id in enumerate(all_ids)}
    missing = sorted(set(ids) - set(index))
    if missing:
        raise KeyError(f"{path}: {len(missing)} ids not in the shard, e.g. {missing[:3]}")
    return {image_id: index[image_id] for image_id in sorted(set(ids), key=index.__getitem__)}


def read_jpegs(path: str | os.PathLike, ids: Sequence[str]) -> dict[str, bytes]:
    """Stored JPEG bytes of the images ``ids`` of an image shard (only those rows are read)."""
    with _open_shard(path, ["ids", "jpeg", "orig_size"]) as f:
        all_ids, _ = _image_header(f, path)
        rows = _row_index(all_ids, ids, path)
        jpegs = {image_id: f["jpeg"][i].tobytes() for image_id, i in rows.items()}
        _check_rows(path, _row_crcs(f), {rows[k]: _crc(v) for k, v in jpegs.items()})
        return jpegs


def write_sift_shard(path: str | os.PathLike, features: Sequence[SiftFeatures]) -> None:
    """Write a SIFT shard atomically; per-image rows are concatenated and indexed by offsets."""
    counts = np.array([len(x.keypoints) for x in features], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    keypoints = np.concatenate([x.keypoints for x in features]) if features else np.zeros((0, 4))
    descriptors = (
        np.concatenate([x.descriptors for x in features]) if features else np.zeros((0, 128))
    )
    keypoints = keypoints.astype(np.float32).reshape(-1, 4)
    descriptors = descriptors.astype(np.uint8).reshape(-1, 128)
    sizes = np.array([x.image_size for x in features], dtype=np.int32).reshape(-1, 2)
    ids = [x.id for x in features]
    row_crc = [_sift_row_crc(keypoints, descriptors, offsets, i) for i in range(len(ids))]
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("ids", data=ids, dtype=STRING)
        f.create_dataset("offsets", data=offsets)
        f.create_dataset("keypoints", data=keypoints)
        f.create_dataset("descriptors", data=descriptors)
        f.create_dataset("image_size", data=sizes)
        f.create_dataset("row_crc32", data=np.array(row_crc, dtype=np.uint32))
        f.attrs["header_crc32"] = _crc(_ids_bytes(ids), offsets, sizes)


def _sift_row_crc(
    keypoints: np.ndarray, descriptors: np.ndarray, offsets: np.ndarray, i: int
) -> int:
    rows = slice(int(offsets[i]), int(offsets[i + 1]))
    return _crc(np.asarray(keypoints[rows], np.float32), np.asarray(descriptors[rows], np.uint8))


_SIFT_DATASETS = ("ids", "offsets", "keypoints", "descriptors", "image_size")


def _sift_header(f: h5py.File, path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Checked ids, offsets and image sizes of an open SIFT shard."""
    ids = list(f["ids"].asstr()[:])
    offsets, sizes = f["offsets"][:], f["image_size"][:]
    _check_lengths(path, len(ids), image_size=sizes)
    n_rows = len(f["descriptors"])
    if (
        len(offsets) != len(ids) + 1
        or offsets[0] != 0
        or offsets[-1] != n_rows
        or len(f["keypoints"]) != n_rows
        or np.any(np.diff(offsets) < 0)
    ):
        raise _corrupt(path, "offsets do not index the keypoint and descriptor rows")
    _check_header(f, path, _ids_bytes(ids), offsets.astype(np.int64), sizes.astype(np.int32))
    return ids, offsets, sizes


def read_sift_rows(path: str | os.PathLike, ids: Sequence[str]) -> dict[str, SiftFeatures]:
    """SIFT features of the images ``ids`` of a SIFT shard, read by offsets: memory follows
    the wanted images, not the shard."""
    with _open_shard(path, _SIFT_DATASETS) as f:
        all_ids, offsets, sizes = _sift_header(f, path)
        rows = _row_index(all_ids, ids, path)
        keypoints, descriptors = f["keypoints"], f["descriptors"]
        features = {
            image_id: SiftFeatures(
                image_id,
                keypoints[offsets[i] : offsets[i + 1]],
                descriptors[offsets[i] : offsets[i + 1]],
                (int(sizes[i, 0]), int(sizes[i, 1])),
            )
            for image_id, i in rows.items()
        }
        _check_rows(
            path,
            _row_crcs(f),
            {rows[k]: _crc(v.keypoints, v.descriptors) for k, v in features.items()},
        )
        return features


def read_sift_shard(path: str | os.PathLike) -> list[SiftFeatures]:
    """Read every image's SIFT features of a shard."""
    with _open_shard(path, _SIFT_DATASETS) as f:
        ids, offsets, sizes = _sift_header(f, path)
        keypoints = f["keypoints"][:]
        descriptors = f["descriptors"][:]
        row_crc = _row_crcs(f)
    _check_rows(
        path,
        row_crc,
        {i: _sift_row_crc(keypoints, descriptors, offsets, i) for i in range(len(ids))},
    )
    return [
        SiftFeatures(
            image_id,
            keypoints[offsets[i] : offsets[i + 1]],
            descriptors[offsets[i] : offsets[i + 1]],
            (int(sizes[i, 0]), int(sizes[i, 1])),
        )
        for i, image_id in enumerate(ids)
    ]


def sift_descriptor_count(path: str | os.PathLike) -> int:
    """Number of descriptors of a SIFT shard, from its checked header (no descriptor is read)."""
    with _open_shard(path, _SIFT_DATASETS) as f:
        _, offsets, _ = _sift_header(f, path)
        return int(offsets[-1])


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
        f.attrs["header_crc32"] = _crc(_ids_bytes(list(ids)), vectors)


def read_embedding_shard(path: str | os.PathLike) -> Embeddings:
    """Read an embedding shard (vectors converted to float32)."""
    with _open_shard(path, ["ids", "vectors"]) as f:
        ids = list(f["ids"].asstr()[:])
        vectors = f["vectors"][:]
        _check_lengths(path, len(ids), vectors=vectors)
        _check_header(f, path, _ids_bytes(ids), vectors)
    return Embeddings(ids, vectors.astype(np.float32))


def export_isc2021(shards: Sequence[str | os.PathLike], path: str | os.PathLike) -> None:
    """Concatenate embedding shards into the isc2021 HDF5 layout (``image_names``, ``vectors``)."""
    parts = [read_embedding_shard(s) for s in shards]
    ids = [i for p in parts for i in p.ids]
    vectors = np.concatenate([p.vectors for p in parts]) if parts else np.zeros((0, 0))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("image_names", data=ids, dtype=STRING)
        f.create_dataset("vectors", data=vectors.astype(np.float32))
