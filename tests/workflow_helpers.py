"""Run the workflow from tests: tiny image sets, dry-run plans parsed into (rule, wildcards)."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

Job = tuple[str, str]  # (rule, "key=value, ..." wildcards or "")


def snakemake_env() -> dict[str, str]:
    """The environment of a snakemake run from the tests: this checkout's copydetect first (as
    pytest's ``pythonpath``), whatever copy the venv has installed, and fixed hashing."""
    paths = [str(ROOT / "workflow_scripts"), os.environ.get("PYTHONPATH", "")]
    path = os.pathsep.join(filter(None, paths))
    return {**os.environ, "PYTHONPATH": path, "PYTHONHASHSEED": "0"}


def photo_tiles(n: int, size: int = 160) -> list[Image.Image]:
    """Distinct real-photo tiles: non-overlapping crops of scikit-image's sample photographs."""
    from skimage import data

    tiles = []
    for photo in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket()):
        h, w = photo.shape[:2]
        for y in range(0, h - size + 1, size):
            for x in range(0, w - size + 1, size):
                tiles.append(
                    Image.fromarray(np.ascontiguousarray(photo[y : y + size, x : x + size]))
                )
    if len(tiles) < n:
        raise ValueError(f"only {len(tiles)} tiles")
    return tiles[:n]


def write_tiny_sets(
    root: Path, n_references: int = 12, n_copies: int = 4, n_training: int = 5
) -> dict[str, str]:
    """References = photo tiles; queries = rotated/cropped/flipped copies of the first ones plus
    one distractor tile kept out of the references; training = other tiles (codebooks and PCA
    are fitted on them, so adding a reference does not refit). Returns the config overrides."""
    tiles = photo_tiles(n_references + 1 + n_training)
    for folder in ("references", "queries", "training"):
        (root / folder).mkdir(parents=True)
    for i, tile in enumerate(tiles[n_references + 1 :]):
        tile.save(root / "training" / f"T{i:06d}.jpg", quality=95)
    for i, tile in enumerate(tiles[:n_references]):
        tile.save(root / "references" / f"R{i:06d}.jpg", quality=95)
    gt = ["query_id,reference_id"]
    for i in range(n_copies):
        copy = tiles[i].rotate(8 * (i + 1), expand=True).crop((10, 10, 160, 150))
        if i % 2:
            copy = ImageOps.mirror(copy)
        copy.save(root / "queries" / f"Q{i:05d}.jpg", quality=80)
        gt.append(f"Q{i:05d},R{i:06d}")
    tiles[n_references].save(root / "queries" / f"Q{n_copies:05d}.jpg")
    gt.append(f"Q{n_copies:05d},")
    (root / "ground_truth.csv").write_text("\n".join(gt) + "\n")
    return {
        "queries": str(root / "queries"),
        "references": str(root / "references"),
        "training": str(root / "training"),
        "ground_truth": str(root / "ground_truth.csv"),
    }


def snakemake_command(workdir: Path, config: dict, *args: str) -> tuple[list[str], dict]:
    """The command line and environment that run snakemake on the repository's Snakefile in
    ``workdir``; ``config`` (nested dicts) is written to a YAML file given after
    config/config.yaml, so it overrides key by key."""
    workdir.mkdir(parents=True, exist_ok=True)
    overrides = (
        workdir.parent / f".{workdir.name}-config-{len(list(workdir.parent.iterdir()))}.yaml"
    )
    overrides.write_text(yaml.safe_dump(config))
    cmd = [
        SNAKEMAKE,
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        str(overrides),
        "--cores",
        "2",
        *args,
    ]
    return cmd, snakemake_env()


def snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    """Run snakemake in ``workdir`` (see :func:`snakemake_command`) to the end."""
    cmd, env = snakemake_command(workdir, config, *args)
    # stdout and stderr merged: Snakemake prints errors to either depending on the phase.
    return subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, check=False
    )


def plan(workdir: Path, config: dict, *args: str) -> list[Job]:
    """The jobs a dry run would execute, as sorted (rule, wildcards) pairs. A main-run job is
    written without its ``run=results`` wildcard; a development-run job keeps
    ``run=results/development``."""
    result = snakemake(workdir, config, "-n", *args)
    assert result.returncode == 0, result.stdout[-5000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", result.stdout):
        match = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        if match:
            wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            named = wildcards.group(1) if wildcards else ""
            jobs.append((match.group(1), re.sub(r"^run=results(, |$)", "", named)))
    return sorted(jobs)


def best_per_query(predictions: Path) -> dict[str, tuple[str, float]]:
    """query_id -> (reference_id, score) of its highest-scored row in a predictions.csv."""
    with open(predictions, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and list(rows[0]) == ["query_id", "reference_id", "score"]
    best: dict[str, tuple[str, float]] = {}
    for row in rows:
        if float(row["score"]) > best.get(row["query_id"], ("", -1.0))[1]:
            best[row["query_id"]] = (row["reference_id"], float(row["score"]))
    return best
