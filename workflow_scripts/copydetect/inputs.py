"""Image sets and their stable sharding.

An image set is a directory (searched recursively) or a text file with one image path per line.
The image id is the file stem, as in DISC21 (``Q00001``, ``R000001``).

Shard membership depends only on the image id and the shard count (a hash of the id modulo the
count), so adding or removing an image touches exactly one shard. The count is a power of two
derived from ``shard_size`` (or pinned with ``num_shards``): it only changes when the set doubles
or halves, which is the one moment every shard is rebuilt.

Images are not Snakemake input files: a million input files make DAG building take minutes.
Instead each ingest job gets its shard's table of (id, path, fingerprint) as a parameter, so a
changed table (an image added, removed, moved or modified) reruns that job through Snakemake's
``params`` trigger. The fingerprint is the file's size and mtime (one ``stat`` per image at
planning time) or, with ``change_detection: path``, nothing: then planning reads only directory
entries or the list file, and an image overwritten in place under the same name is not noticed.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


class ImageSetError(ValueError):
    """An image set that cannot be used: missing, empty or with duplicate ids."""


@dataclass(frozen=True)
class ImageEntry:
    """One image of a set: its id (file stem), its path and a change fingerprint."""

    id: str
    path: str
    fingerprint: str = ""


def file_fingerprint(path: str) -> str:
    """``size:mtime_ns`` of a file, or ``missing`` (ingest then records it as unreadable)."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk_directory(root: Path) -> Iterable[str]:
    # os.walk uses scandir's d_type, so no per-file stat is needed to tell files from folders.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            if _is_image_name(name):
                yield os.path.join(dirpath, name)


def _read_list_file(list_file: Path) -> Iterable[str]:
    # Relative paths in a list are relative to the list file, so a list travels with its images.
    # os.path rather than pathlib: this runs once per image at planning time (1M lines).
    base = str(list_file.parent)
    with open(list_file, encoding="utf-8") as handle:
        for line in handle:
            path = line.rstrip("\r\n")
            if not path.strip() or path.lstrip().startswith("#"):
                continue
            yield path if path.startswith("/") else os.path.join(base, path)


def list_image_set(
    source: str | os.PathLike, set_name: str, fingerprint: bool = False
) -> list[ImageEntry]:
    """List the images of a set, sorted by id; with ``fingerprint``, stat each image.

    Raises
    ------
    ImageSetError
        When the source does not exist, holds no image, or two files share an id.
    """
    root = Path(source)
    if root.is_dir():
        paths = _walk_directory(root)
    elif root.is_file():
        paths = _read_list_file(root)
    else:
        raise ImageSetError(f"{set_name}: {str(source)!r} is neither a directory nor a list file")
    by_id: dict[str, str] = {}
    for path in paths:
        image_id = os.path.splitext(os.path.basename(path))[0]
        if image_id in by_id:
            raise ImageSetError(
                f"{set_name}: duplicate image id {image_id!r}: {by_id[image_id]!r} and {path!r}"
            )
        by_id[image_id] = path
    if not by_id:
        raise ImageSetError(
            f"{set_name}: no images in {str(source)!r} "
            f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS))}, any case)"
        )
    if fingerprint:
        return [ImageEntry(i, by_id[i], file_fingerprint(by_id[i])) for i in sorted(by_id)]
    return [ImageEntry(i, by_id[i]) for i in sorted(by_id)]


def shard_count(n_images: int, shard_size: int, num_shards: int | str = "auto") -> int:
    """Number of shards: ``num_shards`` when pinned, else the power of two giving shards of at
    most ``shard_size`` images on average (a power of two so that growth rarely reshuffles)."""
    if num_shards != "auto":
        return int(num_shards)
    needed = max(1, math.ceil(n_images / shard_size))
    return 1 << (needed - 1).bit_length()


def shard_index(image_id: str, n_shards: int) -> int:
    """Stable shard of an id: CRC32 of its UTF-8 bytes (same on every machine and run)."""
    return zlib.crc32(image_id.encode("utf-8")) % n_shards


def shard_name(index: int) -> str:
    return f"s{index:04d}"


def assign_shards(entries: list[ImageEntry], n_shards: int) -> dict[str, list[ImageEntry]]:
    """Group entries by shard name; every shard name up to ``n_shards`` is present, possibly
    empty, so the set of jobs depends on the count alone. Entries keep their id order."""
    shards: dict[str, list[ImageEntry]] = {shard_name(i): [] for i in range(n_shards)}
    for entry in entries:
        shards[shard_name(shard_index(entry.id, n_shards))].append(entry)
    return shards


def group_shards(shard_names: list[str], shards_per_group: int) -> dict[str, list[str]]:
    """Consecutive groups of shards, the unit of one search job (bounded memory per job)."""
    groups: dict[str, list[str]] = {}
    for start in range(0, len(shard_names), shards_per_group):
        groups[f"g{start // shards_per_group:04d}"] = shard_names[start : start + shards_per_group]
    return groups
