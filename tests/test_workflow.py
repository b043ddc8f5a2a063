"""Workflow tests: configuration errors, a tiny end-to-end run, and dry-run plans that show what a
change reruns (one new image → one shard's jobs and the merges downstream; one parameter → the
rules that read it; a new query batch → query side only)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from workflow_helpers import (
    ROOT,
    SNAKEMAKE,
    best_per_query,
    photo_tiles,
    plan,
    snakemake,
    snakemake_env,
    write_tiny_sets,
)

from copydetect.inputs import shard_index

pytestmark = pytest.mark.workflow

SMALL_SHARDS = {
    "sharding": {"queries": {"shard_size": 4}, "references": {"shard_size": 4}},
    "local": {"reference_shards_per_job": 2},
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A completed run on 12 reference tiles (+4 bad files) in 4 shards, 5 queries in 2."""
    root = tmp_path_factory.mktemp("e2e")
    config = {**write_tiny_sets(root / "data"), **SMALL_SHARDS}
    references = root / "data" / "references"
    (references / "R900000.jpg").write_bytes(b"")
    (references / "R900001.jpg").write_text("not an image")
    (references / "README").write_text("no extension: not listed, but not silently dropped")
    with open(os.path.join(os.fsencode(references), b"R9\xff.jpg"), "wb") as bad_name:
        bad_name.write(b"a file name that is not UTF-8")
    result = snakemake(root / "run", config)
    assert result.returncode == 0, result.stdout[-5000:]
    return root, config


def test_unknown_config_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    result = snakemake(tmp_path, {"ingest": {"max_sid": 3}}, "-n")
    assert result.returncode != 0
    assert "max_sid" in result.stdout and "ingest" in result.stdout


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    result = snakemake(tmp_path, {"verify": {"ratio": "high"}}, "-n")
    assert result.returncode != 0
    assert "['verify']['ratio']" in result.stdout


def test_defaults_come_from_the_workflow_under_another_directory(tmp_path: Path) -> None:
    """Only the user's partial file on the command line, run elsewhere: config/config.yaml of
    the workflow still supplies every other key (the schema fills in nothing)."""
    sets = write_tiny_sets(tmp_path / "data")
    user = tmp_path / "user.yaml"
    user.write_text(f"queries: {sets['queries']}\nreferences: {sets['references']}\n")
    command = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path / "run")]
    result = subprocess.run(
        [*command, "--configfile", str(user), "-n"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        cwd=tmp_path,
        env=snakemake_env(),
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "fit_vlad_codebook" in result.stdout and "local_candidates" in result.stdout


def test_duplicate_ids_stop_the_run_naming_both_paths(tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / "refs" / sub).mkdir(parents=True)
        photo_tiles(1)[0].save(tmp_path / "refs" / sub / "R1.jpg")
    config = {"queries": str(tmp_path / "refs" / "a"), "references": str(tmp_path / "refs")}
    result = snakemake(tmp_path / "run", config, "-n")
    assert result.returncode != 0
    assert "duplicate image id 'R1'" in result.stdout
    assert str(tmp_path / "refs" / "a" / "R1.jpg") in result.stdout
    assert str(tmp_path / "refs" / "b" / "R1.jpg") in result.stdout


def test_empty_set_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    config = {"queries": str(tmp_path / "empty"), "references": str(tmp_path / "empty")}
    result = snakemake(tmp_path / "run", config, "-n")
    assert result.returncode != 0
    assert "no images" in result.stdout


def test_end_to_end_predicts_the_copies(finished_run: tuple[Path, dict]) -> None:
    root, _ = finished_run
    best = best_per_query(root / "run" / "results" / "predictions.csv")
    for i in range(4):
        assert best[f"Q{i:05d}"][0] == f"R{i:06d}"
    metrics = json.loads((root / "run" / "results" / "eval" / "metrics.json").read_text())
    assert metrics["micro_ap"] > 0.9
    assert (root / "run" / "results" / "eval" / "pr_curve.png").stat().st_size > 0


def test_bad_references_are_recorded_and_the_run_completes(
    finished_run: tuple[Path, dict],
) -> None:
    root, _ = finished_run
    summary = json.loads(
        (root / "run" / "results" / "images" / "references" / "summary.json").read_text()
    )
    assert summary["n_images"] == 12 and summary["n_rejected"] == 4
    assert summary["reasons"] == {
        "empty_file": 1,
        "non_utf8_name": 1,
        "not_an_image": 1,
        "unsupported_format": 1,
    }
    rejects = (root / "run" / "results" / "images" / "references" / "rejects.csv").read_text()
    assert "R9\\xff.jpg" in rejects and "README" in rejects


def test_nothing_to_do_after_a_run(finished_run: tuple[Path, dict]) -> None:
    root, config = finished_run
    assert plan(root / "run", config) == []


def test_one_new_reference_reruns_its_shard_and_the_merges(
    finished_run: tuple[Path, dict],
) -> None:
    root, config = finished_run
    new = root / "data" / "references" / "R500000.jpg"
    photo_tiles(25)[-1].save(new)
    try:
        jobs = plan(root / "run", config)
    finally:
        new.unlink()
    shard = f"s{shard_index('R500000', 4):04d}"
    group = f"g{shard_index('R500000', 4) // 2:04d}"
    query_shards = [f"s{i:04d}" for i in range(2)]
    expected = sorted(
        [
            ("all", ""),
            ("evaluate", ""),
            ("fuse", ""),
            ("make_gallery", ""),
            ("ingest", f"set=references, shard={shard}"),
            ("sift", f"set=references, shard={shard}"),
            ("index_local_shard", f"shard={shard}"),
            ("embed_vlad", f"model=vlad, set=references, shard={shard}"),
            ("embed_layout", f"model=layout, set=references, shard={shard}"),
            *(
                ("project_embeddings", f"model={model}, set=references, shard={shard}")
                for model in ("vlad", "layout")
            ),
            ("summarize_ingest", "set=references"),
            *(
                ("global_search", f"model={model}, view={view}, shard={q}")
                for model in ("vlad", "layout")
                for view in ("queries", "crops_global")  # the crops of overlay.detector
                for q in query_shards
            ),
            *(
                (
                    rule,
                    f"view={view}, shard={q}"
                    + (f", group={group}" if rule == "local_search" else ""),
                )
                for rule in ("local_search", "local_candidates", "verify")
                for view in ("queries", "queries_mirrored", "crops_local")
                for q in query_shards
                if not (rule == "verify" and view == "queries_mirrored")  # verified with queries
            ),
        ]
    )
    assert jobs == expected


def test_overwritten_reference_reruns_its_shard(finished_run: tuple[Path, dict]) -> None:
    root, config = finished_run
    image = root / "data" / "references" / "R000005.jpg"
    original, stat = image.read_bytes(), image.stat()
    photo_tiles(25)[-1].save(image)
    try:
        jobs = plan(root / "run", config)
    finally:
        image.write_bytes(original)
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    shard = f"s{shard_index('R000005', 4):04d}"
    assert ("ingest", f"set=references, shard={shard}") in jobs
    assert [job for job in jobs if job[0] == "ingest"] == [
        ("ingest", f"set=references, shard={shard}")
    ]


def test_changed_verify_parameter_reruns_verify_and_what_follows(
    finished_run: tuple[Path, dict],
) -> None:
    root, config = finished_run
    jobs = plan(root / "run", {**config, "verify": {"ratio": 0.7}})
    rules = sorted({rule for rule, _ in jobs})
    assert rules == ["all", "evaluate", "fuse", "make_gallery", "verify"]


def test_changed_vlad_power_reencodes_without_refitting_the_codebook(
    finished_run: tuple[Path, dict],
) -> None:
    root, config = finished_run
    jobs = plan(root / "run", {**config, "models": {"vlad": {"power": 0.4}}})
    rules = {rule for rule, _ in jobs}
    assert "fit_vlad_codebook" not in rules  # power is applied when encoding
    assert {"embed_vlad", "fit_normalization", "global_search"} <= rules
    codebook = plan(root / "run", {**config, "models": {"vlad": {"codebook_size": 32}}})
    assert ("fit_vlad_codebook", "model=vlad") in codebook


def test_changed_candidate_threshold_does_not_rerun_the_search(
    finished_run: tuple[Path, dict],
) -> None:
    root, config = finished_run
    local = {"reference_shards_per_job": 2, "candidates": {"min_votes": 3}}
    jobs = plan(root / "run", {**config, "local": local})
    rules = sorted({rule for rule, _ in jobs})
    assert rules == ["all", "evaluate", "fuse", "local_candidates", "make_gallery", "verify"]


def test_local_index_changes_rerun_what_they_touch(finished_run: tuple[Path, dict]) -> None:
    """nprobe reruns the searches only; the cells' size refits the shared quantizer and rebuilds
    every shard's lists; flat drops both and searches the SIFT shards."""
    root, config = finished_run
    local = {"reference_shards_per_job": 2}
    search = plan(root / "run", {**config, "local": {**local, "search": {"nprobe": 2}}})
    assert {"fit_local_index", "index_local_shard"}.isdisjoint(rule for rule, _ in search)
    assert "local_search" in {rule for rule, _ in search}
    refit = plan(root / "run", {**config, "local": {**local, "index": {"list_length": 50}}})
    rules = [rule for rule, _ in refit]
    assert rules.count("fit_local_index") == 1 and rules.count("index_local_shard") == 4
    flat = plan(root / "run", {**config, "local": {**local, "index": {"type": "flat"}}})
    assert {"fit_local_index", "index_local_shard"}.isdisjoint(rule for rule, _ in flat)
    assert "local_search" in {rule for rule, _ in flat}


def test_new_query_batch_reuses_the_reference_side(
    finished_run: tuple[Path, dict],
) -> None:
    root, config = finished_run
    batch = root / "batch2"
    shutil.copytree(root / "data" / "queries", batch)
    (batch / "Q00000.jpg").rename(batch / "Q10000.jpg")
    jobs = plan(root / "run", {**config, "queries": str(batch), "ground_truth": ""})
    assert not [job for job in jobs if "set=references" in job[1]]
    assert ("ingest", "set=queries, shard=s" + f"{shard_index('Q10000', 2):04d}") in jobs


def test_a_neural_model_adds_gpu_embedding_jobs(
    finished_run: tuple[Path, dict], tmp_path: Path
) -> None:
    root, config = finished_run
    weights = tmp_path / "sscd.onnx"
    weights.write_bytes(b"stand-in: a dry run does not open it")
    sscd = {"backend": "onnx", "weights": str(weights), "input_format": "nhwc_uint8"}
    jobs = plan(
        root / "run",
        {**config, "models": {"sscd": sscd}, "global": {"models": ["vlad", "sscd"]}},
    )
    embeds = sorted(w for rule, w in jobs if rule == "embed_images")
    assert embeds == sorted(
        f"model=sscd, set={name}, shard={shard}"
        for name, shards in (
            ("queries", 2),
            ("crops_global", 2),
            ("references", 4),
            ("training", 1),
        )
        for shard in (f"s{i:04d}" for i in range(shards))
    )
    assert {rule for rule, _ in jobs} >= {"fit_normalization", "global_search", "verify"}
    assert not [job for job in jobs if job[0] in ("embed_vlad", "local_search")]


def test_unknown_global_model_is_a_clear_error(finished_run: tuple[Path, dict]) -> None:
    root, config = finished_run
    result = snakemake(root / "run", {**config, "global": {"models": ["sscd"]}}, "-n")
    assert result.returncode != 0
    assert "global.models names ['sscd']" in result.stdout


def test_dba_adds_one_augmentation_job_per_reference_shard(finished_run: tuple[Path, dict]) -> None:
    root, config = finished_run
    jobs = plan(root / "run", {**config, "global": {"dba": {"k": 2}}})
    assert sorted(w for rule, w in jobs if rule == "augment_references") == [
        f"model={model}, shard=s{i:04d}" for model in ("layout", "vlad") for i in range(4)
    ]
    assert {rule for rule, _ in jobs} == {
        "all",
        "augment_references",
        "global_search",
        "verify",
        "fuse",
        "evaluate",
        "make_gallery",
    }


def test_isc2021_export_is_one_job_on_request(finished_run: tuple[Path, dict]) -> None:
    root, config = finished_run
    jobs = plan(root / "run", config, "results/export/vlad/references.h5")
    assert jobs == [("export_isc2021", "model=vlad, set=references")]


def test_changed_fusion_setting_reruns_only_fusion_and_what_reads_it(
    finished_run: tuple[Path, dict],
) -> None:
    root, config = finished_run
    jobs = plan(root / "run", {**config, "fusion": {"top_k_per_query": 3}})
    assert sorted({rule for rule, _ in jobs}) == ["all", "evaluate", "fuse", "make_gallery"]


def test_a_trained_overlay_detector_adds_the_crop_branches(
    finished_run: tuple[Path, dict],
) -> None:
    root, config = finished_run
    jobs = plan(root / "run", {**config, "overlay": {"detector": "train"}})
    rules = {rule for rule, _ in jobs}
    assert {"synthesize_overlay_data", "train_overlay_detector"} <= rules
    query_shards = [f"shard=s{i:04d}" for i in range(2)]
    assert sorted(w for rule, w in jobs if rule == "detect_overlays") == query_shards
    crop_jobs = {(rule, w.split(", shard=")[0]) for rule, w in jobs if "crops_" in w}
    assert crop_jobs == {
        ("sift", "set=crops_global"),  # VLAD embeds from SIFT
        ("sift", "set=crops_local"),
        ("embed_vlad", "model=vlad, set=crops_global"),
        ("project_embeddings", "model=vlad, set=crops_global"),
        ("global_search", "model=vlad, view=crops_global"),
        ("embed_layout", "model=layout, set=crops_global"),  # layout embeds from the images
        ("project_embeddings", "model=layout, set=crops_global"),
        ("global_search", "model=layout, view=crops_global"),
        ("assign_local_cells", "view=crops_local"),
        ("local_search", "view=crops_local"),
        ("local_candidates", "view=crops_local"),
        ("mirror_sift", "view=crops_local"),  # the crops' mirrors, verified too
        ("verify", "view=crops_local"),
    }
    # The reference side is reused as it is.
    assert not [job for job in jobs if "set=references" in job[1]]


def test_own_detector_weights_skip_training(
    finished_run: tuple[Path, dict], tmp_path: Path
) -> None:
    root, config = finished_run
    weights = tmp_path / "detector.pt"
    weights.write_bytes(b"stand-in: a dry run does not open it")
    overlay = {"detector": str(weights), "branches": {"global": False}}
    jobs = plan(root / "run", {**config, "overlay": overlay})
    rules = {rule for rule, _ in jobs}
    assert "detect_overlays" in rules
    assert not rules & {"synthesize_overlay_data", "train_overlay_detector", "global_search"}
    assert not [job for job in jobs if "crops_global" in job[1]]


def test_logistic_fusion_is_fitted_on_a_development_run(
    finished_run: tuple[Path, dict], tmp_path: Path
) -> None:
    root, config = finished_run
    development = {"run": str(root / "run"), "ground_truth": config["ground_truth"]}
    fusion = {"method": "logistic", "development": development}
    jobs = plan(tmp_path / "run", {**config, "fusion": fusion}, "results/fusion/model.json")
    assert jobs == [("fit_fusion", "")]


def test_logistic_fusion_without_a_model_or_development_run_is_a_clear_error(
    finished_run: tuple[Path, dict],
) -> None:
    root, config = finished_run
    no_training = {**config, "training": "", "fusion": {"method": "logistic"}}
    result = snakemake(root / "run", no_training, "-n")
    assert result.returncode != 0
    assert "no training set to make a development run from" in result.stdout


def test_snakemake_report_holds_the_evaluation_and_the_gallery(
    finished_run: tuple[Path, dict], tmp_path: Path
) -> None:
    root, config = finished_run
    report = tmp_path / "report.html"
    result = snakemake(root / "run", config, "--report", str(report))
    assert result.returncode == 0, result.stdout[-3000:]
    html = report.read_text(errors="replace")
    for name in ("metrics.json", "pr_curve.png", "ablation.csv", "edit_recall.csv", "gallery.html"):
        assert name in html


def test_logistic_fusion_makes_its_own_development_run_from_the_training_set(
    finished_run: tuple[Path, dict],
) -> None:
    root, config = finished_run
    jobs = plan(root / "run", {**config, "fusion": {"method": "logistic"}})
    assert {"synthesize_development", "fit_fusion", "fuse"} <= {rule for rule, _ in jobs}
    # The development run's shard jobs are planned; the main run's own shards are reused.
    assert any(w.startswith("run=results/development, ") for _, w in jobs)
    assert not [job for job in jobs if "set=" in job[1] and not job[1].startswith("run=")]


def test_mirrored_queries_are_searched_and_switching_them_off_redoes_no_search(
    finished_run: tuple[Path, dict],
) -> None:
    root, config = finished_run
    done = {p.name for p in (root / "run" / "results" / "sift" / "queries_mirrored").iterdir()}
    assert done == {"s0000.h5", "s0001.h5"}  # the default run searched the mirrors
    local = {**config["local"], "mirrored_queries": False}
    jobs = plan(root / "run", {**config, "local": local})
    assert sorted({rule for rule, _ in jobs}) == [
        "all",
        "evaluate",
        "fuse",
        "make_gallery",
        "verify",
    ]


def test_the_mirrored_sift_stage_feeds_search_verify_and_the_gallery(
    finished_run: tuple[Path, dict],
) -> None:
    root, config = finished_run
    jobs = plan(root / "run", config, "--forcerun", "mirror_sift")
    query_shards = [f"s{i:04d}" for i in range(2)]
    # Forced: the queries' mirrors and the local crops' (overlay.detector: rectangles) are
    # made again; only the mirrored queries are searched, the crops' mirrors are verified.
    assert sorted(w for rule, w in jobs if rule == "mirror_sift") == [
        f"view={view}, shard={q}" for view in ("crops_local", "queries") for q in query_shards
    ]
    assert sorted(w for rule, w in jobs if rule == "local_candidates") == [
        f"view=queries_mirrored, shard={q}" for q in query_shards
    ]
    assert sorted({rule for rule, _ in jobs}) == [
        "all",
        "assign_local_cells",
        "evaluate",
        "fuse",
        "local_candidates",
        "local_search",
        "make_gallery",
        "mirror_sift",
        "verify",
    ]


def test_switching_the_mirror_method_reruns_no_sift_job(finished_run: tuple[Path, dict]) -> None:
    """sift.mirror extract (SIFT of the flipped pixels) instead of the default permute: only
    the mirrors and what reads them rerun; the sift jobs' params leave sift.mirror out."""
    root, config = finished_run
    jobs = plan(root / "run", {**config, "sift": {"mirror": "extract"}})
    rules = {rule for rule, _ in jobs}
    assert "mirror_sift" in rules and "verify" in rules
    assert "sift" not in rules and "ingest" not in rules


def test_no_mirror_stage_without_mirrored_search_and_flips(
    finished_run: tuple[Path, dict], tmp_path: Path
) -> None:
    _, config = finished_run
    local = {**config["local"], "mirrored_queries": False}
    flips_only = plan(tmp_path / "flips", {**config, "local": local})
    assert ("mirror_sift", "view=queries, shard=s0000") in flips_only
    assert not [job for job in flips_only if "queries_mirrored" in job[1]]
    neither = plan(tmp_path / "none", {**config, "local": local, "verify": {"try_flip": False}})
    assert "verify" in {rule for rule, _ in neither}
    assert "mirror_sift" not in {rule for rule, _ in neither}


def test_review_labels_rerun_only_their_evaluation(finished_run: tuple[Path, dict]) -> None:
    """The rule fusion learns nothing: a reviewer's labels add their evaluation, and a new
    export of them reruns that evaluation only."""
    root, config = finished_run
    labels = root / "data" / "review_labels.csv"
    labels.write_text("query_id,reference_id\nQ00000,R000000\nQ00004,\n")
    reviewed = {**config, "review_labels": str(labels)}
    assert plan(root / "run", reviewed) == [("all", ""), ("evaluate_review", "")]
    result = snakemake(root / "run", reviewed)
    assert result.returncode == 0, result.stdout[-5000:]
    review = root / "run" / "results" / "eval" / "review"
    metrics = json.loads((review / "metrics.json").read_text())
    assert (metrics["n_queries"], metrics["n_positives"]) == (2, 1)
    assert plan(root / "run", reviewed) == []
    # The reviewer decides one more query and exports again.
    labels.write_text(labels.read_text() + "Q00001,R000001\n")
    later = labels.stat().st_mtime + 10
    os.utime(labels, (later, later))
    assert plan(root / "run", reviewed) == [("all", ""), ("evaluate_review", "")]
    assert plan(root / "run", config) == []  # without labels: as before


def test_logistic_fusion_can_be_fitted_on_review_labels_alone(
    finished_run: tuple[Path, dict],
) -> None:
    """No training set and no development run: the reviewed pairs are the training data."""
    root, config = finished_run
    labels = root / "data" / "review_alone.csv"
    labels.write_text("query_id,reference_id\nQ00000,R000000\nQ00004,\n")
    alone = {
        **config,
        "training": "",
        "fusion": {"method": "logistic"},
        "review_labels": str(labels),
    }
    result = snakemake(root / "run", alone, "-n")
    assert result.returncode == 0, result.stdout[-5000:]
    block = re.search(r"^(?:local)?rule fit_fusion:\n\s+input: (.*)$", result.stdout, re.M)
    assert block, result.stdout[-3000:]
    assert block.group(1).split(", ") == [
        *(
            f"results/verify/{view}/s{i:04d}.pairs.csv"
            for view in ("queries", "crops_local")
            for i in range(2)
        ),
        str(labels),
    ]
    assert "synthesize_development" not in result.stdout
