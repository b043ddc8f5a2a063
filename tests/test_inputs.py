"""Image-set listing and stable sharding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from copydetect.inputs import (
    ImageSetError,
    assign_shards,
    group_shards,
    list_image_set,
    list_shard,
    scan_image_set,
    shard_count,
    shard_index,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_directory_is_listed_recursively_with_any_case_extensions(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "R1.JPG")
    touch(tmp_path / "b" / "c" / "R2.webp")
    touch(tmp_path / "R3.Tiff")
    touch(tmp_path / "notes.txt")
    entries = list_image_set(tmp_path, "references")
    assert [e.id for e in entries] == ["R1", "R2", "R3"]
    assert entries[1].path == str(tmp_path / "b" / "c" / "R2.webp")


def test_list_file_paths_are_relative_to_the_list(tmp_path: Path) -> None:
    touch(tmp_path / "imgs" / "Q1.jpg")
    listing = tmp_path / "queries.txt"
    listing.write_text("# a comment\nimgs/Q1.jpg\n\n/abs/-odd name 'x'.png\n")
    entries = list_image_set(listing, "queries")
    assert [(e.id, e.path) for e in entries] == [
        ("-odd name 'x'", "/abs/-odd name 'x'.png"),
        ("Q1", str(tmp_path / "imgs" / "Q1.jpg")),
    ]


def test_duplicate_ids_name_both_paths(tmp_path: Path) -> None:
    first = touch(tmp_path / "x" / "R1.jpg")
    second = touch(tmp_path / "y" / "R1.png")
    with pytest.raises(ImageSetError) as error:
        list_image_set(tmp_path, "references")
    assert str(first) in str(error.value) and str(second) in str(error.value)


def test_empty_and_missing_sets_are_clear_errors(tmp_path: Path) -> None:
    touch(tmp_path / "readme.md")
    with pytest.raises(ImageSetError, match="no images"):
        list_image_set(tmp_path, "queries")
    with pytest.raises(ImageSetError, match="neither a directory nor a list file"):
        list_image_set(tmp_path / "missing", "queries")


def test_shard_count_is_a_power_of_two_unless_pinned() -> None:
    assert shard_count(1, 1000) == 1
    assert shard_count(1000, 1000) == 1
    assert shard_count(1001, 1000) == 2
    assert shard_count(1_000_000, 1000) == 1024
    assert shard_count(5, 1000, 7) == 7


def test_membership_is_stable_under_additions(tmp_path: Path) -> None:
    for i in range(200):
        touch(tmp_path / f"R{i:06d}.jpg")
    before = assign_shards(list_image_set(tmp_path, "references"), 8)
    touch(tmp_path / "R999999.jpg")
    after = assign_shards(list_image_set(tmp_path, "references"), 8)
    changed = [name for name in before if before[name] != after[name]]
    assert changed == [f"s{shard_index('R999999', 8):04d}"]
    assert sum(len(v) for v in after.values()) == 201


def test_a_shard_listed_by_its_job_is_the_planned_shard(tmp_path: Path) -> None:
    # The development set is listed by its ingest jobs, one shard each: together they hold
    # every image once, in the shards that assign_shards gives the whole listing.
    for i in range(40):
        touch(tmp_path / f"Q{i:05d}.jpg")
    planned = assign_shards(list_image_set(tmp_path, "queries"), 4)
    listed = {name: list_shard(tmp_path, "queries", name, 4) for name in planned}
    assert listed == planned
    assert sorted(e.id for v in listed.values() for e in v) == [f"Q{i:05d}" for i in range(40)]
    with pytest.raises(ImageSetError, match="no shard 's0004' among 4"):
        list_shard(tmp_path, "queries", "s0004", 4)


def test_shard_index_is_a_fixed_function_of_the_id() -> None:
    # CRC32 of the UTF-8 id: the same on every machine and Python process (unlike hash()).
    assert shard_index("R000001", 1024) == 3601183539 % 1024
    assert shard_index("Qé", 1) == 0


def test_groups_cover_every_shard_once() -> None:
    names = [f"s{i:04d}" for i in range(10)]
    groups = group_shards(names, 4)
    assert list(groups) == ["g0000", "g0001", "g0002"]
    assert sum(groups.values(), []) == names


def test_fingerprint_changes_when_an_image_is_overwritten(tmp_path: Path) -> None:
    image = touch(tmp_path / "R1.jpg")
    before = list_image_set(tmp_path, "references", fingerprint=True)[0].fingerprint
    image.write_bytes(b"new content")
    after = list_image_set(tmp_path, "references", fingerprint=True)[0].fingerprint
    assert before != after and after.startswith("11:")
    assert list_image_set(tmp_path, "references")[0].fingerprint == ""


def reasons(rejects) -> dict[str, str]:
    return {r.path: r.reason.split(":")[0] for r in rejects}


def test_every_file_is_listed_or_rejected_with_a_reason(tmp_path: Path) -> None:
    for name in ("R1.jpe", "R2.JFIF", "R3.jpg", "photo.heic", "README", "notes.txt"):
        touch(tmp_path / "sub" / name)
    listing = scan_image_set(tmp_path, "references")
    assert [e.id for e in listing.entries] == ["R1", "R2", "R3"]
    assert reasons(listing.rejects) == {
        str(tmp_path / "sub" / name): "unsupported_format"
        for name in ("photo.heic", "README", "notes.txt")
    }
    assert {r.id for r in listing.rejects} == {"photo", "README", "notes"}


def test_a_name_that_is_not_utf8_is_rejected_and_shown_escaped(tmp_path: Path) -> None:
    touch(tmp_path / "R1.jpg")
    bad = os.path.join(os.fsencode(tmp_path), b"bad\xff.jpg")
    open(bad, "wb").close()
    listing = scan_image_set(tmp_path, "references")
    assert [e.id for e in listing.entries] == ["R1"]
    (reject,) = listing.rejects
    assert reject.path == str(tmp_path / "bad\\xff.jpg") and reject.id == "bad\\xff"
    assert reject.reason.startswith("non_utf8_name:")
    reject.path.encode("utf-8")  # writable to a CSV, a log, an HDF5 string


def test_a_list_file_line_that_is_not_utf8_is_rejected(tmp_path: Path) -> None:
    touch(tmp_path / "Q1.jpg")
    listing_file = tmp_path / "queries.txt"
    listing_file.write_bytes(b"Q1.jpg\nQ\xe92.jpg\n")
    listing = scan_image_set(listing_file, "queries")
    assert [e.id for e in listing.entries] == ["Q1"]
    assert reasons(listing.rejects) == {str(tmp_path / "Q\\xe92.jpg"): "non_utf8_name"}


def test_an_unreadable_folder_is_a_reject_not_a_silent_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(tmp_path / "ok" / "R1.jpg")
    touch(tmp_path / "locked" / "R2.jpg")
    real_scandir = os.scandir

    def scandir(path):  # what a mode-000 folder does to a non-root user
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    listing = scan_image_set(tmp_path, "references")
    assert [e.id for e in listing.entries] == ["R1"]
    (reject,) = listing.rejects
    assert reject.path == str(tmp_path / "locked")
    assert reject.reason == "unreadable_directory: Permission denied"


def test_a_folder_symlink_loop_is_listed_once(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "R1.jpg")
    (tmp_path / "a" / "back").symlink_to(tmp_path)
    listing = scan_image_set(tmp_path, "references")
    assert [e.id for e in listing.entries] == ["R1"]
    assert reasons(listing.rejects) == {str(tmp_path / "a" / "back"): "symlink_loop"}
