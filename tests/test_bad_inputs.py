"""The bad-input corpus (tests/bad_inputs.py) through the real workflow: no crash, every file
ingested or in the rejects table with the expected reason, the copies still found."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from bad_inputs import INGESTED, corpus_path, write_corpus
from workflow_helpers import snakemake, write_tiny_sets

from copydetect.inputs import printable_path
from copydetect.shards import read_shard_ids


def all_paths(folder: Path) -> list[str]:
    """Every file and link under ``folder`` (folders themselves excluded), as listing sees it."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        found += [os.path.join(dirpath, name) for name in filenames]
        found += [
            os.path.join(dirpath, d) for d in dirnames if os.path.islink(os.path.join(dirpath, d))
        ]
    return sorted(printable_path(p) for p in found)


def test_the_corpus_has_more_than_forty_kinds(tmp_path: Path) -> None:
    kinds = write_corpus(tmp_path / "corpus")
    assert len(kinds) >= 40
    assert len({k.description for k in kinds}) == len(kinds)
    assert {k.outcome for k in kinds} > {INGESTED, "too_small", "non_utf8_name", "unreadable"}


@pytest.mark.workflow
@pytest.mark.slow
def test_bad_inputs_are_accounted_for_and_the_copies_still_match(tmp_path: Path) -> None:
    config = {
        **write_tiny_sets(tmp_path / "data"),
        "sharding": {"references": {"shard_size": 16}},
    }
    corpus = tmp_path / "data" / "references" / "corpus"
    kinds = write_corpus(corpus)
    result = snakemake(tmp_path / "run", config)
    assert result.returncode == 0, result.stdout[-5000:]
    assert "Traceback" not in result.stdout
    images = tmp_path / "run" / "results" / "images" / "references"
    ingested = {i for shard in images.glob("s*.h5") for i in read_shard_ids(shard)}
    with open(images / "rejects.csv", newline="", encoding="utf-8") as f:
        rejects = {row["path"]: row["reason"].split(":")[0] for row in csv.DictReader(f)}

    for kind in kinds:
        path = printable_path(str(corpus_path(corpus, kind)))
        stem = os.path.splitext(os.path.basename(path))[0]
        outcome = INGESTED if stem in ingested else rejects.get(path, "vanished")
        assert outcome == kind.outcome, kind.description
    for path in all_paths(corpus):  # links and files the kinds made on the side, too
        stem = os.path.splitext(os.path.basename(path))[0]
        assert stem in ingested or path in rejects, path
    assert not (tmp_path / "run" / "PWNED").exists() and not Path("PWNED").exists()

    with open(tmp_path / "run" / "results" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    best: dict[str, tuple[str, float]] = {}
    for row in rows:
        if float(row["score"]) > best.get(row["query_id"], ("", -1.0))[1]:
            best[row["query_id"]] = (row["reference_id"], float(row["score"]))
    for i in range(4):
        assert best[f"Q{i:05d}"][0] == f"R{i:06d}"
