"""The labeled development run that the logistic fusion is fitted on.

Fitting fusion weights on the evaluation's own ground truth would report an optimistic score,
and most users have no labels at all. So the workflow makes its own labeled data: the query
synthesizer turns the *training* images (unlabeled, from the same distribution as the
references, never the references themselves) into references, edited copies and distractors,
and the same workflow, with the same models and branches, runs on them in a folder of its own.
Its pair tables and ground truth are what ``fit_fusion`` learns from.
"""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from copydetect.inputs import list_image_set
from copydetect.params import config_params
from copydetect.synth import SynthesisConfig, SynthesisSummary, synthesize

logger = logging.getLogger(__name__)

TARGET = "results/fuse/scored_pairs.csv"  # building it runs every branch and verify


@config_params("fusion.development", read_elsewhere=("run", "ground_truth"))
class DevelopmentParams:
    """The sizes of the synthetic development set (``fusion.development``; its ``run`` and
    ``ground_truth`` name a run of the user's instead, and are read by the rules)."""

    references: int
    copy_queries: int
    distractors: int
    seed: int


def development_params(development: Mapping[str, Any] | None) -> DevelopmentParams:
    """The sizes from the ``fusion.development`` section."""
    return DevelopmentParams.from_mapping(development)


def synthesis_config(n_sources: int, params: DevelopmentParams) -> SynthesisConfig:
    """Sizes that fit ``n_sources`` training images: references and distractors each take one
    image (shrunk proportionally when there are too few), copies reuse the references."""
    wanted = params.references + params.distractors
    if n_sources < 4:
        raise ValueError(
            f"the development set is made from the training images, and there are {n_sources}: "
            "give at least 4 (hundreds for a useful fit)"
        )
    scale = min(1.0, n_sources / wanted)
    references = max(2, int(params.references * scale))
    distractors = min(max(1, int(params.distractors * scale)), n_sources - references)
    return SynthesisConfig(
        n_references=references,
        n_copy_queries=params.copy_queries,
        n_distractors=distractors,
        seed=params.seed,
    )


def make_development_set(
    training: str | os.PathLike, out_dir: Path, params: DevelopmentParams
) -> SynthesisSummary:
    """Synthesize references, copies, distractors and their ground truth from the training set
    (a directory or list file, as in the config)."""
    sources = [Path(e.path) for e in list_image_set(training, "training")]
    return synthesize(sources, out_dir, synthesis_config(len(sources), params))


def _absolute(path: str) -> str:
    return str(Path(path).resolve()) if path else path


def development_config(config: Mapping[str, Any], data_dir: Path) -> dict[str, Any]:
    """The run's config with the development data as its inputs.

    Same models, branches and parameters (so the fitted weights apply to the same evidence),
    paths made absolute (the development run works in another folder), the rule fusion (no
    development run inside the development run), and no training set: codebooks and PCA are
    fitted on the development references, which come from the training images anyway.
    """
    dev = copy.deepcopy(dict(config))
    data_dir = data_dir.resolve()
    dev.update(
        queries=str(data_dir / "queries"),
        references=str(data_dir / "references"),
        training="",
        ground_truth=str(data_dir / "ground_truth.csv"),
        edits=str(data_dir / "edits.csv"),
    )
    dev["fusion"] = {**dev.get("fusion", {}), "method": "rule", "model": ""}
    for spec in dev.get("models", {}).values():
        if spec.get("weights"):
            spec["weights"] = _absolute(spec["weights"])
    overlay = dev.get("overlay", {})
    if overlay.get("detector") not in (None, "none", "train"):
        overlay["detector"] = _absolute(overlay["detector"])
    return dev


def run_development(
    snakefile: str | os.PathLike, workdir: Path, config: Mapping[str, Any], cores: int
) -> None:
    """Run the workflow on the development set in ``workdir`` up to the scored pair table."""
    config_file = workdir / "development-config.yaml"
    config_file.write_text(yaml.safe_dump(dict(config), sort_keys=True))
    command = [
        str(Path(sys.executable).with_name("snakemake")),
        *("-s", str(Path(snakefile).resolve()), "--directory", str(workdir)),
        *("--configfile", str(config_file), "--cores", str(cores), TARGET),
    ]
    logger.info("development run: %s", " ".join(command))
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    logger.info("%s", result.stdout)
    if result.returncode != 0:
        raise RuntimeError(f"the development run failed (exit {result.returncode}); see above")
