"""ISC2021 matching-track metrics: micro-AP, recall at precision 0.9 and recall at rank k.

The definitions follow facebookresearch/isc2021 ``isc/metrics.py``:

- all predictions of all queries are pooled and sorted by decreasing score; among equal scores
  the negatives come first (the worst possible order), so constant or integer scores cannot buy AP;
- the number of positives is the number of ground-truth pairs, so a pair that no prediction names
  lowers recall; predictions for queries absent from the ground truth are negatives;
- micro-AP is ``sum_i (recall_i - recall_{i-1}) * precision_i`` over the ranked list (the
  non-interpolated step sum, ``average_precision`` in isc2021);
- recall at P90 is the highest recall among ranks whose precision is at least 0.9, and its
  threshold is the score at the first such rank;
- the rank of a ground-truth pair is the number of that query's predictions scored at least as
  high as the pair, minus one (ties again pessimistic).

Where isc2021 would raise or return nan, this module returns a defined value instead: a repeated
``(query, reference)`` prediction counts once at its highest score (isc2021 rejects the file), and
with no positives or no predictions every figure is 0.0 and the threshold is None (isc2021 divides
by zero). ``recall_at_p90`` is 0.0 rather than None when precision 0.9 is never reached;
``threshold_at_p90 is None`` is the signal for that.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from copydetect.atomic import atomic_path

log = logging.getLogger(__name__)

PREDICTIONS_HEADER = ("query_id", "reference_id", "score")
GROUND_TRUTH_HEADER = ("query_id", "reference_id")
P90 = 0.9


@dataclass(frozen=True)
class PredictedMatch:
    """One scored candidate pair; a higher score means more likely a copy."""

    query: str
    db: str
    score: float


@dataclass(frozen=True)
class GroundTruthMatch:
    """One true (query, reference) copy pair."""

    query: str
    db: str


@dataclass(frozen=True)
class GroundTruth:
    """A ground-truth file: its positive pairs and every query it lists (distractors included)."""

    matches: list[GroundTruthMatch]
    query_ids: frozenset[str]


@dataclass(frozen=True)
class Metrics:
    """Matching-track figures of one predictions file (see the module docstring)."""

    micro_ap: float
    recall_at_p90: float
    threshold_at_p90: float | None  # None: precision 0.9 is never reached
    recall_at_rank1: float
    recall_at_rank10: float
    n_predictions: int  # distinct (query, reference) pairs scored
    n_positives: int  # distinct ground-truth pairs
    n_queries: int  # ground-truth queries, distractors included

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain JSON-serialisable mapping of every field."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Readers


def _csv_rows(path: str | os.PathLike, header: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` of a headed CSV, checking the header and the field count.

    Blank lines are skipped; fields are stripped of surrounding whitespace.
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        first = next(reader, None)
        if first is None or tuple(x.strip() for x in first) != header:
            raise ValueError(f"{path}:1: expected header {','.join(header)!r}, got {first!r}")
        for row in reader:
            if not row or all(not x.strip() for x in row):
                continue
            if len(row) != len(header):
                raise ValueError(
                    f"{path}:{reader.line_num}: expected {len(header)} fields, got {len(row)}"
                )
            yield reader.line_num, [x.strip() for x in row]


def _parse_score(text: str, where: str) -> float:
    """Parse a finite float; ``where`` (``file:line``) prefixes the error message."""
    try:
        score = float(text)
    except ValueError:
        raise ValueError(f"{where}: score {text!r} is not a number") from None
    if not math.isfinite(score):
        raise ValueError(f"{where}: score {text!r} is not finite")
    return score


def read_predictions(path: str | os.PathLike) -> list[PredictedMatch]:
    """Read a ``query_id,reference_id,score`` CSV (header required) in file order.

    Raises
    ------
    ValueError
        Naming the file and line, for a missing header, a wrong field count, an empty id or a
        score that is not a finite number.
    """
    predictions = []
    for line, (query, db, score) in _csv_rows(path, PREDICTIONS_HEADER):
        where = f"{path}:{line}"
        if not query or not db:
            raise ValueError(f"{where}: empty query_id or reference_id")
        predictions.append(PredictedMatch(query, db, _parse_score(score, where)))
    return predictions


def read_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Read a ``query_id,reference_id`` CSV (header required).

    An empty ``reference_id`` marks a distractor query: it is listed in ``query_ids`` but adds
    no positive pair. A repeated pair is kept once.
    """
    matches: dict[GroundTruthMatch, None] = {}  # ordered set
    query_ids = set()
    for line, (query, db) in _csv_rows(path, GROUND_TRUTH_HEADER):
        if not query:
            raise ValueError(f"{path}:{line}: empty query_id")
        query_ids.add(query)
        if db:
            matches[GroundTruthMatch(query, db)] = None
    return GroundTruth(list(matches), frozenset(query_ids))


# --------------------------------------------------------------------------------------------
# Metrics


def deduplicate(predictions: Sequence[PredictedMatch]) -> list[PredictedMatch]:
    """Keep one prediction per ``(query, db)`` pair, the highest-scored, in first-seen order.

    isc2021 rejects such files; keeping the maximum is what a ranking of the pair would use, and
    counting a pair twice would let one true pair add two true positives.
    """
    best: dict[tuple[str, str], PredictedMatch] = {}
    for p in predictions:
        if not math.isfinite(p.score):
            raise ValueError(f"non-finite score in prediction {p}")
        kept = best.get((p.query, p.db))
        if kept is None or p.score > kept.score:
            best[(p.query, p.db)] = p
    if len(best) != len(predictions):
        log.warning("%d duplicate predictions counted once", len(predictions) - len(best))
    return list(best.values())


def _ranked_curve(
    gt_pairs: set[tuple[str, str]], predictions: Sequence[PredictedMatch]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and score of every rank of already-deduplicated predictions."""
    scores = np.array([p.score for p in predictions], dtype=np.float64)
    labels = np.array([(p.query, p.db) in gt_pairs for p in predictions], dtype=bool)
    # lexsort's last key is the primary one: decreasing score, then negatives (False) first.
    order = np.lexsort((labels, -scores))
    scores, labels = scores[order], labels[order]
    n_true = np.cumsum(labels)
    precision = n_true / np.arange(1, len(labels) + 1)
    # With no positives recall stays 0 everywhere instead of 0/0.
    recall = n_true / len(gt_pairs) if gt_pairs else np.zeros(len(labels))
    return precision, recall, scores


def precision_recall_curve(
    gt_matches: Sequence[GroundTruthMatch], predictions: Sequence[PredictedMatch]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled precision-recall curve, one point per distinct prediction.

    Returns
    -------
    precision, recall, thresholds
        float64 arrays ordered by decreasing score (so by non-decreasing recall); ``thresholds``
        is the score at each rank. Empty arrays when there are no predictions.
    """
    gt_pairs = {(g.query, g.db) for g in gt_matches}
    return _ranked_curve(gt_pairs, deduplicate(predictions))


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """isc2021 micro-AP: ``sum_i (recall_i - recall_{i-1}) * precision_i`` with ``recall_{-1}=0``.

    Each true positive adds its precision divided by the number of positives; ranks after the
    last one add nothing. ``recall`` must be non-decreasing (the order of the ranked list).
    """
    if len(recall) and np.any(np.diff(recall) < 0):
        raise ValueError("recall must be non-decreasing (ranked order)")
    steps = np.diff(recall, prepend=0.0)
    return float(np.sum(steps * precision))


def _p90_index(precision: np.ndarray, recall: np.ndarray, min_precision: float) -> int | None:
    """Index of the first rank with the highest recall among ranks with enough precision."""
    valid = np.flatnonzero(precision >= min_precision)
    if valid.size == 0:
        return None
    # argmax returns the first maximum: the rank of the last true positive, not the negatives
    # after it, so the threshold is the highest score that still reaches that recall.
    return int(valid[np.argmax(recall[valid])])


def operating_point(
    precision: np.ndarray,
    recall: np.ndarray,
    thresholds: np.ndarray,
    min_precision: float = P90,
) -> tuple[float, float | None]:
    """Highest recall with precision at least ``min_precision``, and its score threshold.

    Returns ``(0.0, None)`` when no rank reaches ``min_precision``.
    """
    i = _p90_index(precision, recall, min_precision)
    if i is None:
        return 0.0, None
    return float(recall[i]), float(thresholds[i])


def true_positive_ranks(
    gt_matches: Sequence[GroundTruthMatch], predictions: Sequence[PredictedMatch]
) -> np.ndarray:
    """0-based rank of each ground-truth pair among its query's predictions (-1 if absent).

    The rank counts every prediction of the query scored at least as high as the pair, so a tie
    ranks the true reference last. ``predictions`` must be deduplicated.
    """
    per_query: dict[str, list[float]] = defaultdict(list)
    pair_score: dict[tuple[str, str], float] = {}
    for p in predictions:
        per_query[p.query].append(p.score)
        pair_score[(p.query, p.db)] = p.score
    ranks = np.full(len(gt_matches), -1, dtype=np.int64)
    for i, g in enumerate(gt_matches):
        score = pair_score.get((g.query, g.db))
        if score is not None:
            ranks[i] = sum(s >= score for s in per_query[g.query]) - 1
    return ranks


def recall_at_rank(ranks: np.ndarray, k: int) -> float:
    """Fraction of ground-truth pairs found among their query's top ``k`` (0.0 if none)."""
    if ranks.size == 0:
        return 0.0
    return float(np.mean((ranks >= 0) & (ranks < k)))


def evaluate(
    gt_matches: Sequence[GroundTruthMatch],
    predictions: Sequence[PredictedMatch],
    query_ids: Collection[str] | None = None,
) -> Metrics:
    """Score predictions against ground-truth pairs (argument order as in isc2021).

    Parameters
    ----------
    gt_matches : Sequence[GroundTruthMatch]
        Positive pairs; a repeated pair counts once.
    predictions : Sequence[PredictedMatch]
        Scored candidates of any queries; a repeated pair counts once at its highest score.
    query_ids : Collection[str], optional
        Every ground-truth query, distractors included (``GroundTruth.query_ids``); only
        ``n_queries`` uses it. Defaults to the queries of ``gt_matches``.
    """
    unique_gt = list(dict.fromkeys(gt_matches))
    unique = deduplicate(predictions)
    precision, recall, thresholds = _ranked_curve({(g.query, g.db) for g in unique_gt}, unique)
    recall_p90, threshold_p90 = operating_point(precision, recall, thresholds)
    ranks = true_positive_ranks(unique_gt, unique)
    if query_ids is None:
        query_ids = {g.query for g in unique_gt}
    return Metrics(
        micro_ap=average_precision(precision, recall),
        recall_at_p90=recall_p90,
        threshold_at_p90=threshold_p90,
        recall_at_rank1=recall_at_rank(ranks, 1),
        recall_at_rank10=recall_at_rank(ranks, 10),
        n_predictions=len(unique),
        n_positives=len(unique_gt),
        n_queries=len(set(query_ids)),
    )


# --------------------------------------------------------------------------------------------
# Plot


def plot_pr_curve(
    precision: np.ndarray, recall: np.ndarray, path: str | os.PathLike, title: str
) -> None:
    """Write the precision-recall curve as a PNG, marking the recall reached at precision 0.9.

    The file is written atomically. Empty arrays give an empty (but valid) plot.
    """
    # Imported here so scoring code that never plots does not pay for matplotlib; the Agg canvas
    # is attached explicitly so no GUI backend or pyplot global state is involved.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    precision, recall = np.asarray(precision, dtype=float), np.asarray(recall, dtype=float)
    fig = Figure(figsize=(8, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(recall, precision, color="tab:blue", linewidth=1.5, label="precision-recall")
    ax.axhline(P90, color="grey", linestyle="--", linewidth=0.8)
    i = _p90_index(precision, recall, P90)
    if i is not None:
        label = f"P90: recall {recall[i]:.3f}"
        ax.plot([recall[i]], [precision[i]], "o", color="tab:red", label=label)
    ax.set(xlabel="Recall", ylabel="Precision", title=title, xlim=(0, 1.02), ylim=(0, 1.02))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
