"""The development run inside the one DAG (logistic fusion without a model): a tiny run that fits
the fusion on it, and dry-run plans that show what a change reruns on the development side."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from workflow_helpers import photo_tiles, plan, snakemake, write_tiny_sets

pytestmark = pytest.mark.workflow

DEV = "run=results/development"
# Two query shards, four reference shards (two local-search groups) in the main run; the
# development set made from the 5 training tiles: 4 references, 4 copies and 1 distractor.
LOGISTIC_RUN = {
    "sharding": {"queries": {"shard_size": 4}, "references": {"shard_size": 4}},
    "local": {"reference_shards_per_job": 2},
    "models": {"vlad": {"backend": "vlad", "codebook_size": 16}},
    "fusion": {
        "method": "logistic",
        "development": {"references": 4, "copy_queries": 4, "distractors": 1},
    },
}


@pytest.fixture(scope="module")
def logistic_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A completed run with logistic fusion: its development run is part of the same DAG."""
    root = tmp_path_factory.mktemp("logistic")
    config = {**write_tiny_sets(root / "data"), **LOGISTIC_RUN}
    result = snakemake(root / "run", config)
    assert result.returncode == 0, result.stdout[-5000:]
    return root, config


def development_jobs(jobs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(rule, wildcards) for rule, wildcards in jobs if wildcards.startswith(DEV)}


def test_the_fusion_model_is_fitted_on_the_development_run(logistic_run: tuple[Path, dict]) -> None:
    root, _ = logistic_run
    results = root / "run" / "results"
    model = json.loads((results / "fusion" / "model.json").read_text())
    assert model["n_positives"] > 0 and model["n_pairs"] > model["n_positives"]
    development = results / "development"
    truth = (development / "ground_truth.csv").read_text().splitlines()
    assert truth[0] == "query_id,reference_id" and len(truth) == 1 + 4 + 1
    # Its jobs ran as jobs of this DAG: each with its own log, under the development run.
    assert sorted(p.name for p in (development / "verify" / "queries").iterdir()) == [
        "s0000.pairs.csv",
        "s0001.pairs.csv",
    ]
    assert (development / "logs" / "verify" / "queries" / "s0000.log").exists()
    assert (development / "logs" / "ingest" / "references" / "s0000.log").exists()
    assert not (development / "results").exists()  # no nested workflow run folder
    assert (results / "predictions.csv").read_text().count("\n") > 1


def test_nothing_to_do_after_the_run(logistic_run: tuple[Path, dict]) -> None:
    root, config = logistic_run
    assert plan(root / "run", config) == []


def pair_tables(run: str) -> list[str]:
    """A run's pair tables as fit_fusion lists them: the queries', then the local crops' (the
    crop branch of the default overlay.detector)."""
    return [
        f"{run}/verify/{view}/s000{i}.pairs.csv"
        for view in ("queries", "crops_local")
        for i in (0, 1)
    ]


def test_fit_fusion_names_the_development_pair_tables_as_inputs(
    logistic_run: tuple[Path, dict],
) -> None:
    root, config = logistic_run
    result = snakemake(root / "run", config, "-n", "--forcerun", "fit_fusion")
    assert result.returncode == 0, result.stdout[-5000:]
    block = re.search(r"^(?:local)?rule fit_fusion:\n\s+input: (.*)$", result.stdout, re.M)
    assert block, result.stdout[-3000:]
    assert block.group(1).split(", ") == [
        *pair_tables("results/development"),
        "results/development/ground_truth.csv",
    ]


def test_a_new_global_model_reruns_its_development_jobs_and_the_fit(
    logistic_run: tuple[Path, dict],
) -> None:
    root, config = logistic_run
    vlad2 = {"backend": "vlad", "codebook_size": 8}
    changed = {**config, "models": {**config["models"], "vlad2": vlad2}}
    jobs = plan(root / "run", {**changed, "global": {"models": ["vlad", "vlad2"]}})
    embedded = [
        *((name, f"s000{i}") for name in ("queries", "crops_global") for i in (0, 1)),
        ("references", "s0000"),
    ]
    assert development_jobs(jobs) == {
        ("fit_vlad_codebook", f"{DEV}, model=vlad2"),
        ("fit_normalization", f"{DEV}, model=vlad2"),
        *(
            (rule, f"{DEV}, model=vlad2, set={name}, shard={shard}")
            for rule in ("embed_vlad", "project_embeddings")
            for name, shard in embedded
        ),
        *(
            ("global_search", f"{DEV}, model=vlad2, view={view}, shard=s000{i}")
            for view in ("queries", "crops_global")
            for i in (0, 1)
        ),
        *(("verify", f"{DEV}, view=queries, shard=s000{i}") for i in (0, 1)),
    }
    assert ("fit_fusion", "") in jobs
    assert "synthesize_development" not in {rule for rule, _ in jobs}


def test_changed_vlad_parameters_rerun_the_development_run_from_its_codebook(
    logistic_run: tuple[Path, dict],
) -> None:
    root, config = logistic_run
    vlad = {**config["models"]["vlad"], "codebook_size": 8}
    jobs = plan(root / "run", {**config, "models": {"vlad": vlad}})
    rules = {rule for rule, _ in development_jobs(jobs)}
    assert rules == {
        "fit_vlad_codebook",
        "embed_vlad",
        "fit_normalization",
        "project_embeddings",
        "global_search",
        "verify",
    }
    assert ("fit_fusion", "") in jobs


def test_changed_verify_ratio_reruns_both_verifications_and_the_fit(
    logistic_run: tuple[Path, dict],
) -> None:
    root, config = logistic_run
    jobs = plan(root / "run", {**config, "verify": {"ratio": 0.7}})
    assert jobs == sorted(
        [
            ("all", ""),
            ("evaluate", ""),
            ("fit_fusion", ""),
            ("fuse", ""),
            ("make_gallery", ""),
            *(
                ("verify", f"{run}view={view}, shard=s000{i}")
                for run in ("", f"{DEV}, ")
                for view in ("queries", "crops_local")
                for i in (0, 1)
            ),
        ]
    )


def test_changed_development_sizes_remake_the_development_set_only(
    logistic_run: tuple[Path, dict],
) -> None:
    root, config = logistic_run
    development = {**config["fusion"]["development"], "seed": 1}
    jobs = plan(
        root / "run", {**config, "fusion": {**config["fusion"], "development": development}}
    )
    # The new set is remade and the development run's shard jobs with it (planned from the set's
    # sizes before it exists); on the main run's side only the fit and what follows.
    main_run = {rule for rule, wildcards in jobs if not wildcards.startswith(DEV)}
    assert main_run == {
        "all",
        "synthesize_development",
        "fit_fusion",
        "fuse",
        "evaluate",
        "make_gallery",
    }
    assert ("ingest", f"{DEV}, set=queries, shard=s0000") in jobs
    assert ("verify", f"{DEV}, view=queries, shard=s0000") in jobs


def test_a_changed_training_set_remakes_the_development_set(
    logistic_run: tuple[Path, dict],
) -> None:
    root, config = logistic_run
    new = Path(config["training"]) / "T900000.jpg"
    photo_tiles(25)[-1].save(new)
    try:
        jobs = plan(root / "run", config)
    finally:
        new.unlink()
    assert ("synthesize_development", "") in jobs
    assert ("ingest", "set=training, shard=s0000") in jobs


def test_review_labels_refit_the_fusion_on_the_reviewed_pairs(
    logistic_run: tuple[Path, dict],
) -> None:
    """With fusion.method logistic, review labels make this run's reviewed pairs training data:
    fit_fusion and what follows rerun, no shard job; the model then counts those pairs."""
    root, config = logistic_run
    results = root / "run" / "results"
    before = json.loads((results / "fusion" / "model.json").read_text())
    labels = root / "data" / "review_labels.csv"
    labels.write_text("query_id,reference_id\nQ00000,R000000\nQ00001,R000001\nQ00004,\n")
    reviewed = {**config, "review_labels": str(labels)}
    jobs = plan(root / "run", reviewed)
    assert jobs == [
        ("all", ""),
        ("evaluate", ""),
        ("evaluate_review", ""),
        ("fit_fusion", ""),
        ("fuse", ""),
        ("make_gallery", ""),
    ]
    result = snakemake(root / "run", reviewed, "-n", "--forcerun", "fit_fusion")
    block = re.search(r"^(?:local)?rule fit_fusion:\n\s+input: (.*)$", result.stdout, re.M)
    assert block, result.stdout[-3000:]
    assert block.group(1).split(", ") == [
        *pair_tables("results/development"),
        "results/development/ground_truth.csv",
        *pair_tables("results"),
        str(labels),
    ]
    result = snakemake(root / "run", reviewed)
    assert result.returncode == 0, result.stdout[-5000:]
    after = json.loads((results / "fusion" / "model.json").read_text())
    reviewed_rows = after["n_pairs"] - before["n_pairs"]
    assert reviewed_rows > 0 and after["n_positives"] >= before["n_positives"] + 1
    assert (results / "eval" / "review" / "metrics.json").exists()
    assert plan(root / "run", reviewed) == []
