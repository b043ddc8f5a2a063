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

# Extensions listed from a folder; ingest identifies the content, so a lying extension is fine.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)

# Reasons of files that listing already turns away (ingest's codes, plus the listing's own).
UNSUPPORTED_FORMAT = "unsupported_format"
UNREADABLE_DIRECTORY = "unreadable_directory"
NON_UTF8_NAME = "non_utf8_name"
SYMLINK_LOOP = "symlink_loop"


class ImageSetError(ValueError):
    """An image set that cannot be used: missing, empty or with duplicate ids."""


@dataclass(frozen=True)
class ImageEntry:
    """One image of a set: its id (file stem), its path and a change fingerprint."""

    id: str
    path: str
    fingerprint: str = ""


@dataclass(frozen=True)
class ListingReject:
    """A file or folder under a set that is not an image to ingest, with the reason: a row of
    the set's rejects table (``id,path,reason``), so that no file vanishes without a word."""

    id: str
    path: str  # printable: bytes that are not UTF-8 shown as \xNN
    reason: str  # "<code>: <detail>", like ingest's rejects


@dataclass(frozen=True)
class ImageListing:
    """What listing a set found: the images to ingest (sorted by id) and what it turned away."""

    entries: list[ImageEntry]
    rejects: list[ListingReject]


def printable_path(path: str) -> str:
    """A path safe to write anywhere: undecodable bytes of the name (kept by Python as lone
    surrogates) are shown as ``\\xNN``, which would otherwise fail every UTF-8 write."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def file_fingerprint(path: str) -> str:
    """``size:mtime_ns`` of a file, or ``missing`` (ingest then records it as unreadable)."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _reject(path: str, code: str, detail: str) -> ListingReject:
    shown = printable_path(path)
    return ListingReject(_stem(shown) or shown, shown, f"{code}: {detail}")


class _Walk:
    """A recursive listing that records what it cannot or will not list instead of skipping it
    silently: unreadable folders, folder symlink loops and files that are not images."""

    def __init__(self) -> None:
        self.rejects: list[ListingReject] = []
        self._seen: set[tuple[int, int]] = set()

    def _on_error(self, error: OSError) -> None:
        path = error.filename if isinstance(error.filename, str) else str(error.filename)
        self.rejects.append(_reject(path, UNREADABLE_DIRECTORY, _one_line(error.strerror)))

    def _first_visit(self, dirpath: str) -> bool:
        # os.walk(followlinks=True) would follow a link to an ancestor until the path is too
        # long; a folder reached twice (same device and inode) is a loop or a duplicate.
        try:
            st = os.stat(dirpath)
        except OSError as error:
            self._on_error(error)
            return False
        key = (st.st_dev, st.st_ino)
        if key in self._seen:
            self.rejects.append(_reject(dirpath, SYMLINK_LOOP, "folder already listed"))
            return False
        self._seen.add(key)
        return True

    def files(self, root: Path) -> Iterable[str]:
        # os.walk uses scandir's d_type, so no per-file stat is needed to tell files from
        # folders; only folders are stat'ed (for the loop check).
        for dirpath, dirnames, filenames in os.walk(root, onerror=self._on_error, followlinks=True):
            if not self._first_visit(dirpath):
                dirnames.clear()
                continue
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if not _is_utf8(path):
                    self.rejects.append(_reject(path, NON_UTF8_NAME, "the name is not UTF-8"))
                elif not _is_image_name(name):
                    ext = os.path.splitext(name)[1].lower() or "no extension"
                    self.rejects.append(
                        _reject(path, UNSUPPORTED_FORMAT, f"{ext} files are not listed")
                    )
                else:
                    yield path


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _read_list_file(list_file: Path, rejects: list[ListingReject]) -> Iterable[str]:
    # Relative paths in a list are relative to the list file, so a list travels with its images.
    # os.path rather than pathlib: this runs once per image at planning time (1M lines).
    # surrogateescape: a line that is not UTF-8 becomes a reject, not a crash of the planning.
    base = str(list_file.parent)
    with open(list_file, encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            path = line.rstrip("\r\n")
            if not path.strip() or path.lstrip().startswith("#"):
                continue
            path = path if path.startswith("/") else os.path.join(base, path)
            if _is_utf8(path):
                yield path
            else:
                rejects.append(_reject(path, NON_UTF8_NAME, "the listed path is not UTF-8"))


def scan_image_set(
    source: str | os.PathLike, set_name: str, fingerprint: bool = False
) -> ImageListing:
    """List the images of a set, sorted by id (with ``fingerprint``, stat each image), and the
    files and folders under it that are not listed, each with its reason.

    Raises
    ------
    ImageSetError
        When the source does not exist, holds no image, or two files share an id.
    """
    root = Path(source)
    rejects: list[ListingReject] = []
    if root.is_dir():
        walk = _Walk()
        paths: Iterable[str] = walk.files(root)
        rejects = walk.rejects
    elif root.is_file():
        paths = _read_list_file(root, rejects)
    else:
        raise ImageSetError(f"{set_name}: {str(source)!r} is neither a directory nor a list file")
    by_id: dict[str, str] = {}
    for path in paths:
        image_id = _stem(path)
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
    fingerprints = {i: file_fingerprint(p) if fingerprint else "" for i, p in by_id.items()}
    entries = [ImageEntry(i, by_id[i], fingerprints[i]) for i in sorted(by_id)]
    return ImageListing(entries, sorted(rejects, key=lambda r: (r.path, r.reason)))


def list_image_set(
    source: str | os.PathLike, set_name: str, fingerprint: bool = False
) -> list[ImageEntry]:
    """The images of a set, sorted by id (see :func:`scan_image_set`)."""
    return scan_image_set(source, set_name, fingerprint).entries


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


def list_shard(
    source: str | os.PathLike, set_name: str, shard: str, n_shards: int
) -> list[ImageEntry]:
    """The entries of one shard of a set listed now, for a set made during the run (the
    development set): the same ids land in the same shard as :func:`assign_shards` puts them.

    Raises
    ------
    ImageSetError
        As :func:`scan_image_set`, or when ``shard`` is not one of ``n_shards``.
    """
    shards = assign_shards(list_image_set(source, set_name), n_shards)
    if shard not in shards:
        raise ImageSetError(f"{set_name}: no shard {shard!r} among {n_shards} shards")
    return shards[shard]


def group_shards(shard_names: list[str], shards_per_group: int) -> dict[str, list[str]]:
    """Consecutive groups of shards, the unit of one search job (bounded memory per job)."""
    groups: dict[str, list[str]] = {}
    for start in range(0, len(shard_names), shards_per_group):
        groups[f"g{start // shards_per_group:04d}"] = shard_names[start : start + shards_per_group]
    return groups
