"""A corrupt intermediate stops the run with its name, and the same command rebuilds it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from workflow_helpers import snakemake, write_tiny_sets

SMALL_SHARDS = {
    "sharding": {"queries": {"shard_size": 4}, "references": {"shard_size": 4}},
    "local": {"reference_shards_per_job": 2},
}


@pytest.mark.workflow
@pytest.mark.slow
def test_truncated_shards_are_named_then_rebuilt_by_the_same_command(tmp_path: Path) -> None:
    config = {**write_tiny_sets(tmp_path / "data"), **SMALL_SHARDS}
    run = tmp_path / "run"
    first = snakemake(run, config)
    assert first.returncode == 0, first.stdout[-3000:]
    predictions = (run / "results" / "predictions.csv").read_bytes()
    damaged = [
        run / "results" / "sift" / "references" / "s0000.h5",
        run / "results" / "embeddings" / "vlad" / "queries" / "s0001.h5",
    ]
    for path in damaged:  # a copy cut short: newer than its outputs, so they rerun
        os.truncate(path, path.stat().st_size // 2)

    # Each run that meets a corrupt shard stops naming it (one failure may stop the run before
    # the other damaged file is read); the same command then rebuilds what was moved aside.
    for _ in range(len(damaged)):
        stopped = snakemake(run, config)
        if stopped.returncode == 0:
            break
        assert "is corrupt" in stopped.stdout and "Run the same command again" in stopped.stdout
    resumed = snakemake(run, config)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    for path in damaged:  # rebuilt, or not needed any more by the outputs rebuilt after it
        assert Path(f"{path}.corrupt").exists()
    assert (run / "results" / "predictions.csv").read_bytes() == predictions
    assert "Nothing to be done" in snakemake(run, config, "-n").stdout
