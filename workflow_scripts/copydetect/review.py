"""A reviewer's labels: the decisions exported from the gallery, read back as extra labels.

The gallery (``copydetect.gallery``) lets a reviewer mark each shown pair *copy* or *not a
copy* and exports them as ``review_labels.csv`` in the ground-truth format
(``query_id,reference_id``). A query the reviewer decided on is judged as a whole:

* every pair marked *copy* is a row ``query_id,reference_id``;
* a query with no pair marked *copy* and at least one marked *not a copy* is one row
  ``query_id,`` (empty reference: no copy, like a distractor of the ground truth);
* so any other pair of a listed query is *not a copy*, as in the ground truth; a query the
  file does not list is **unreviewed**: it says nothing about it.

That last point is where review labels differ from a ground truth: a ground truth lists every
query (an unlisted query's predictions are wrong), review labels cover the queries someone
looked at. Evaluation against them (:func:`reviewed_predictions`) and the fusion fit
(:func:`reviewed_pairs`) therefore only use the reviewed queries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from copydetect.metrics import (
    GROUND_TRUTH_HEADER,
    GroundTruth,
    GroundTruthMatch,
    PredictedMatch,
    _csv_rows,
)

logger = logging.getLogger(__name__)


def read_review_labels(path: str | os.PathLike) -> GroundTruth:
    """Read and check a review labels file (the gallery's export, or written by hand).

    Raises
    ------
    ValueError
        Naming the file and line: a header other than ``query_id,reference_id``, a row
        without exactly two fields, an empty ``query_id``, a query both marked as having no
        copy (empty ``reference_id``) and as a copy of a reference, or no labeled query at all.
    """
    matches: dict[GroundTruthMatch, None] = {}  # ordered set: a repeated row counts once
    no_copy: dict[str, int] = {}  # query -> line of its "no copy" row
    copy_line: dict[str, tuple[int, str]] = {}  # query -> (line, reference) of its first copy
    for line, (query, reference) in _csv_rows(path, GROUND_TRUTH_HEADER):
        where = f"{path}:{line}"
        if not query:
            raise ValueError(f"{where}: empty query_id")
        if reference:
            matches[GroundTruthMatch(query, reference)] = None
            copy_line.setdefault(query, (line, reference))
        else:
            no_copy.setdefault(query, line)
        if query in no_copy and query in copy_line:
            first, ref = copy_line[query]
            raise ValueError(
                f"{where}: query {query!r} is marked as having no copy (line {no_copy[query]}) "
                f"and as a copy of {ref!r} (line {first}); keep one decision"
            )
    query_ids = frozenset(no_copy) | frozenset(copy_line)
    if not query_ids:
        raise ValueError(f"{path}: no labeled query (only a header)")
    return GroundTruth(list(matches), query_ids)


def reviewed_predictions(
    predictions: Sequence[PredictedMatch], labels: GroundTruth
) -> list[PredictedMatch]:
    """The predictions of the reviewed queries only (the others are unjudged, not wrong)."""
    return [p for p in predictions if p.query in labels.query_ids]


def reviewed_pairs(pairs: pd.DataFrame, labels: GroundTruth) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of a pair table whose query was reviewed, and their labels (True: a copy).

    A reviewed pair without a row (a copy retrieval never proposed) has no evidence to learn
    from: it is counted in the log, not an error.
    """
    reviewed = pairs.loc[pairs["query_id"].isin(labels.query_ids)].reset_index(drop=True)
    copies = {(m.query, m.db) for m in labels.matches}
    keys = list(zip(reviewed["query_id"], reviewed["reference_id"], strict=True))
    y = np.fromiter((key in copies for key in keys), dtype=bool, count=len(keys))
    unmatched = len(copies - set(keys))
    if unmatched:
        logger.warning("%d reviewed copies have no candidate row: not used in the fit", unmatched)
    logger.info(
        "%d pair rows of %d reviewed queries (%d copies)",
        len(reviewed),
        len(labels.query_ids),
        int(y.sum()),
    )
    return reviewed, y
