"""The labeled development run that the logistic fusion is fitted on.

Fitting fusion weights on the evaluation's own ground truth would report an optimistic score,
and most users have no labels at all. So the workflow makes its own labeled data: the query
synthesizer turns the *training* images (unlabeled, from the same distribution as the
references, never the references themselves) into references, edited copies and distractors,
and the same rules, with the same models and branches, run on them as the development run of
the one DAG (``results/development/``, see rules/common.smk). Its pair tables and ground truth
are what ``fit_fusion`` learns from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from copydetect.inputs import list_image_set
from copydetect.params import config_params
from copydetect.synth import SynthesisConfig, SynthesisSummary, synthesize


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
