"""Recall by edit type: which edits of the synthesized copies each branch (and the fusion) finds.

The synthesizer's ``edits.csv`` (``query_id,reference_id,edits``, the edit chain as a JSON list
of ``{"op": ..., ...}``) says how every query was made. For every edit operation, the copy pairs
of the ground truth whose query's chain contains it form a group (a query with three edits is in
three groups; a copy with an empty chain is in ``none``), and ``all`` holds every ground-truth
pair. Per group and per ranking (``fused`` and each branch alone, as in the ablation table):

* ``recall_at_1``: the fraction of the group's pairs whose reference is its query's top
  prediction (ties ranked pessimistically, as in copydetect.metrics);
* ``recall_at_p90``: the fraction with a prediction scored at least that ranking's own
  threshold at precision 0.9 (0 when the ranking never reaches precision 0.9).

Without an edit log only the ``all`` rows are written: the file stays a valid table with the
same columns.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from copydetect.metrics import (
    GroundTruth,
    GroundTruthMatch,
    Metrics,
    PredictedMatch,
    true_positive_ranks,
)

EDITS_HEADER = ("query_id", "reference_id", "edits")
EDIT_RECALL_COLUMNS = ["edit", "branch", "copies", "recall_at_1", "recall_at_p90"]
ALL = "all"
NO_EDIT = "none"


def read_edits(path: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """Edit operations of every query of an ``edits.csv``, in chain order.

    Raises
    ------
    ValueError
        Naming the file and line, for a wrong header, or an ``edits`` field that is not a JSON
        list of objects with an ``op``.
    """
    operations = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != EDITS_HEADER:
            raise ValueError(f"{path}:1: expected header {','.join(EDITS_HEADER)!r}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            try:
                chain = json.loads(row["edits"])
                operations[row["query_id"]] = tuple(str(step["op"]) for step in chain)
            except (json.JSONDecodeError, TypeError, KeyError):
                raise ValueError(f"{where}: edits must be a JSON list of {{'op': ...}}") from None
    return operations


def edit_groups(
    matches: Sequence[GroundTruthMatch], edits: Mapping[str, tuple[str, ...]] | None
) -> dict[str, np.ndarray]:
    """``all`` then every operation (sorted): a bool mask over ``matches`` per group.

    Copies whose query the edit log does not list are only in ``all``.
    """
    groups = {ALL: np.ones(len(matches), dtype=bool)}
    if edits is None:
        return groups
    # A copy made with an empty chain is in the group "none"; one the log lacks in no group.
    labels = [
        set(ops or (NO_EDIT,)) if (ops := edits.get(m.query)) is not None else set()
        for m in matches
    ]
    for name in sorted(set().union(*labels)):
        groups[name] = np.array([name in names for names in labels], dtype=bool)
    return groups


def _found_at(matches: Sequence[GroundTruthMatch], predictions: Sequence[PredictedMatch]) -> dict:
    """Score of every predicted ground-truth pair."""
    wanted = {(m.query, m.db) for m in matches}
    return {(p.query, p.db): p.score for p in predictions if (p.query, p.db) in wanted}


def edit_recall(
    ground_truth: GroundTruth,
    ranked: Mapping[str, Sequence[PredictedMatch]],
    metrics: Mapping[str, Metrics],
    edits: Mapping[str, tuple[str, ...]] | None = None,
) -> pd.DataFrame:
    """The edit-recall table (module docstring): one row per (edit group, ranking).

    ``ranked`` holds deduplicated predictions per ranking (copydetect.ablation's
    ``ranked_predictions``) and ``metrics`` their metrics, for the P90 thresholds.
    """
    matches = list(dict.fromkeys(ground_truth.matches))
    groups = edit_groups(matches, edits)
    rows = []
    for name, predictions in ranked.items():
        top1 = true_positive_ranks(matches, predictions) == 0
        threshold = metrics[name].threshold_at_p90
        scores = _found_at(matches, predictions)
        if threshold is None:
            above = np.zeros(len(matches), dtype=bool)
        else:
            above = np.array([scores.get((m.query, m.db), -np.inf) >= threshold for m in matches])
        for edit, mask in groups.items():
            copies = int(mask.sum())
            rows.append(
                {
                    "edit": edit,
                    "branch": name,
                    "copies": copies,
                    "recall_at_1": float(top1[mask].mean()) if copies else 0.0,
                    "recall_at_p90": float(above[mask].mean()) if copies else 0.0,
                }
            )
    table = pd.DataFrame(rows, columns=EDIT_RECALL_COLUMNS)
    # Group by edit (``all`` first, then operations by name), rankings in their given order.
    order = {edit: i for i, edit in enumerate(groups)}
    return table.sort_values("edit", key=lambda s: s.map(order), kind="stable").reset_index(
        drop=True
    )
