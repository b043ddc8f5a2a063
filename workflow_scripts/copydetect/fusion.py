"""Score fusion: the evidence of every branch of a pair → one continuous score in (0, 1).

Two methods: the label-free rule (:func:`fuse_rule`, the default), which puts each branch's
evidence on a common scale of nats above chance, keeps the best view per evidence family, adds
the families and squashes the sum; and a monotone logistic model (:func:`fit_logistic`) fitted
on a labeled development run. A branch that did not propose a pair counts as its weakest
evidence. The design, the constants and how they were tuned: ``docs/fusion.md``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from copydetect.atomic import atomic_path
from copydetect.metrics import GroundTruth
from copydetect.params import config_params
from copydetect.predictions import empty_predictions, select_predictions
from copydetect.tables import read_table

logger = logging.getLogger(__name__)

KEYS = ["query_id", "reference_id"]
CROP_PREFIX = "crop_"
CROP_LOCAL_PREFIX = "crop_local_"
MAX_DISTANCE = math.sqrt(2.0)  # the largest RootSIFT distance (orthogonal unit vectors)
SCALE_FLOOR = 0.01  # smallest robust std of a similarity (cosine units): MAD 0 on tiny runs
Z_FLOOR = -5.0  # z below this adds nothing more in the logistic feature z_shift
MODEL_FORMAT = "copydetect-fusion-model"
MODEL_VERSION = 1


# --- parameters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleConstants:
    """Constants of the label-free rule (their meaning and tuning: ``docs/fusion.md``)."""

    local_knee: float = 4.5  # N0: inliers (+ quality bonus) where local evidence starts to rise
    local_quality: float = 3.0  # Q: inliers a perfectly clean match set is worth
    local_chance: float = 0.05  # C: chance inliers per ratio-test match outside the inliers
    local_contrast: float = 0.5  # A: share of the query's best other candidate's inliers taken off
    local_votes_weight: float = 0.25  # V: nats per e-fold of local-search votes
    global_knee: float = 2.0  # Z0: robust z of a global similarity where its evidence starts
    global_weight: float = 0.4  # W: nats per robust standard deviation above the knee
    prior: float = 4.0  # fused evidence at which the score is 0.5

    def __post_init__(self) -> None:
        for name in (
            "local_quality",
            "local_chance",
            "local_contrast",
            "local_votes_weight",
            "global_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"fusion.rule.{name} must be >= 0 (monotone fusion)")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RuleConstants:
        """The constants a fitted model was computed with (its JSON's ``rule``)."""
        return cls(**values)


@config_params("fusion", read_elsewhere=("development",))
class FusionParams:
    """The ``fusion`` section of the config (its ``development`` run only feeds fit_fusion)."""

    method: Literal["rule", "logistic"]
    model: str  # fitted model JSON, for method logistic
    top_k_per_query: int
    max_predictions: int


# --- branches and their evidence -----------------------------------------------------------------


@dataclass(frozen=True)
class Branch:
    """One source of evidence in a pair table.

    ``kind`` local: SIFT verification (+ local-search votes); ``prefix`` is put before the
    verification columns (``""`` or ``crop_local_``). ``kind`` global: one embedding model;
    ``column`` is its score column (``<name>_normalized``, else ``<name>_similarity``).
    """

    name: str
    kind: Literal["local", "global"]
    column: str  # local: the inlier column; global: the similarity column used

    @property
    def family(self) -> str:
        """Views of the same evidence (a branch and its ``crop_`` twin) share a family."""
        return self.name.removeprefix(CROP_PREFIX)

    def local_column(self, evidence: str) -> str:
        """Column of a verification field (``inliers``, ``inlier_ratio``, …) of a local branch."""
        return f"{CROP_LOCAL_PREFIX}{evidence}" if self.name == "crop_local" else evidence

    @property
    def votes_column(self) -> str:
        return f"{self.name}_votes"


def find_branches(pairs: pd.DataFrame) -> list[Branch]:
    """Branches with columns in ``pairs``: local views first, then global models by name."""
    columns = set(pairs.columns)
    branches = [
        Branch(name, "local", column)
        for name, column in (("local", "inliers"), ("crop_local", f"{CROP_LOCAL_PREFIX}inliers"))
        if column in columns
    ]
    models = sorted(
        c.removesuffix(suffix)
        for c in columns
        for suffix in ("_normalized", "_similarity")
        if c.endswith(suffix)
    )
    for model in dict.fromkeys(models):
        normalized = f"{model}_normalized"
        column = normalized if normalized in columns else f"{model}_similarity"
        branches.append(Branch(model, "global", column))
    return branches


@dataclass(frozen=True)
class Background:
    """Chance level of one global score column: its median and robust standard deviation."""

    median: float
    scale: float

    def z(self, values: np.ndarray) -> np.ndarray:
        return (values - self.median) / self.scale


def background(values: pd.Series | np.ndarray) -> Background:
    """Median and 1.4826·MAD (floored at :data:`SCALE_FLOOR`) of the finite ``values``.

    Order statistics: the result does not depend on the row order. With no finite value the
    background is (0, 1); every such pair is missing anyway.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Background(0.0, 1.0)
    median = float(np.median(x))
    mad = float(np.median(np.abs(x - median)))
    return Background(median, max(1.4826 * mad, SCALE_FLOOR))


def backgrounds(pairs: pd.DataFrame, branches: Sequence[Branch]) -> dict[str, Background]:
    """The :class:`Background` of every global branch, from the pairs being fused."""
    return {b.name: background(pairs[b.column]) for b in branches if b.kind == "global"}


def _column(pairs: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column as float64 (NaN where missing, all NaN when the column is absent)."""
    if name not in pairs.columns:
        return np.full(len(pairs), np.nan)
    return pd.to_numeric(pairs[name], errors="coerce").to_numpy(dtype=np.float64)


def softplus(x: np.ndarray) -> np.ndarray:
    """``log(1 + e^x)`` without overflow; NaN (a missing value) stays NaN."""
    with np.errstate(invalid="ignore"):
        return np.logaddexp(0.0, x)


@dataclass(frozen=True)
class LocalEvidence:
    """The verification fields of a local branch, missing values set to their worst."""

    present: np.ndarray  # bool: the branch verified the pair
    inliers: np.ndarray  # ≥ 0, contrasted (see contrasted_inliers)
    quality: np.ndarray  # (inlier ratio + closeness) / 2 in [0, 1]
    ratio: np.ndarray  # [0, 1]
    closeness: np.ndarray  # 1 − mean match distance / √2, in [0, 1]
    log_votes: np.ndarray  # log(1 + local-search votes) ≥ 0


def best_of_others(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """For each row, the largest value among the *other* rows of its group (0 when alone);
    independent of row order (tied values are interchangeable)."""
    frame = pd.DataFrame({"group": groups, "value": values})
    rank = frame.groupby("group")["value"].rank(method="first", ascending=False).to_numpy()
    first = frame["value"].where(rank == 1).groupby(frame["group"]).transform("max")
    second = frame["value"].where(rank == 2).groupby(frame["group"]).transform("max")
    return np.where(rank == 1, second.fillna(0.0), first).astype(np.float64)


def contrasted_inliers(
    inliers: np.ndarray, matches: np.ndarray, query_ids: np.ndarray, rule: RuleConstants
) -> np.ndarray:
    """Inliers above chance and above the query's other candidates (docs/fusion.md).

    Repeated structure (glyphs of one typeface, lattices, tiled patterns) gives a consistent
    fit with many matches around it: C inliers are taken off per match outside the inliers.
    A query whose other candidates verify nearly as well is ambiguous (text against any text
    page, one icon part in many icons): A times the best of its other candidates' counts is
    taken off, as a second-nearest-neighbour ratio does for one descriptor.
    """
    n = np.nan_to_num(inliers)
    outside = np.clip(np.nan_to_num(matches, nan=0.0) - n, 0, None)
    above_chance = np.clip(n - rule.local_chance * outside, 0, None)
    if rule.local_contrast == 0:
        return above_chance
    others = best_of_others(above_chance, query_ids)
    return np.clip(above_chance - rule.local_contrast * others, 0, None)


def local_evidence(
    pairs: pd.DataFrame, branch: Branch, rule: RuleConstants | None = None
) -> LocalEvidence:
    """Read a local branch's columns; a missing field counts as the weakest value."""
    rule = rule or RuleConstants()
    inliers = _column(pairs, branch.local_column("inliers"))
    matches = _column(pairs, branch.local_column("matches"))
    ratio = np.clip(np.nan_to_num(_column(pairs, branch.local_column("inlier_ratio"))), 0, 1)
    distance = _column(pairs, branch.local_column("mean_match_distance"))
    closeness = np.clip(1.0 - np.nan_to_num(distance, nan=MAX_DISTANCE) / MAX_DISTANCE, 0, 1)
    votes = np.clip(np.nan_to_num(_column(pairs, branch.votes_column)), 0, None)
    queries = pairs["query_id"].to_numpy()
    return LocalEvidence(
        present=np.isfinite(inliers),
        inliers=contrasted_inliers(np.clip(inliers, 0, None), matches, queries, rule),
        quality=(ratio + closeness) / 2.0,
        ratio=ratio,
        closeness=closeness,
        log_votes=np.log1p(votes),
    )


def rule_evidence(
    pairs: pd.DataFrame, branch: Branch, background: Background | None, rule: RuleConstants
) -> np.ndarray:
    """A branch's evidence in nats above chance (docs/fusion.md); NaN where it is missing."""
    if branch.kind == "local":
        ev = local_evidence(pairs, branch, rule)
        x = ev.inliers + rule.local_quality * ev.quality - rule.local_knee
        evidence = softplus(x) + rule.local_votes_weight * ev.log_votes
        return np.where(ev.present, evidence, np.nan)
    z = background.z(_column(pairs, branch.column))
    return rule.global_weight * softplus(z - rule.global_knee)  # NaN stays NaN


def squash(log_odds: np.ndarray) -> np.ndarray:
    """Strictly increasing map of ℝ onto (0, 1): σ(ℓ) for ℓ ≤ 0, ``1 − 1/(2 + ℓ)`` above.

    Both pieces meet at 0.5 with slope 1/4; the upper one keeps float64 resolution for any
    evidence a pair can have (σ rounds to 1.0 from ℓ ≈ 37). NaN stays NaN.
    """
    ell = np.asarray(log_odds, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # NaN (no evidence) stays NaN
        below = np.minimum(ell, 0.0)
        low = np.exp(below - np.logaddexp(0.0, below))  # σ without overflow
        high = 1.0 - 1.0 / (2.0 + np.maximum(ell, 0.0))
        return np.where(ell <= 0.0, low, high)


def fuse_rule(
    pairs: pd.DataFrame,
    rule: RuleConstants,
    stats: Mapping[str, Background] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fused score and every branch's own score (NaN where it has no evidence) by the rule.

    ``stats`` (default: :func:`backgrounds` of ``pairs``) fixes the global branches' chance
    levels; pass the same stats to compare scores of modified tables.
    """
    branches = find_branches(pairs)
    stats = backgrounds(pairs, branches) if stats is None else stats
    family_evidence: dict[str, np.ndarray] = {}
    branch_scores = {}
    for branch in branches:
        evidence = rule_evidence(pairs, branch, stats.get(branch.name), rule)
        branch_scores[branch.name] = squash(evidence - rule.prior)
        best = family_evidence.get(branch.family, np.zeros(len(pairs)))
        family_evidence[branch.family] = np.fmax(best, np.nan_to_num(evidence))
    total = sum(family_evidence.values(), np.zeros(len(pairs)))
    return squash(total - rule.prior), branch_scores


# --- logistic fusion ---------------------------------------------------------------------------


def branch_features(
    pairs: pd.DataFrame, branch: Branch, background: Background | None, rule: RuleConstants
) -> dict[str, np.ndarray]:
    """Non-negative, non-decreasing transforms of a branch's evidence (0 where missing).

    Names are ``<branch>:<feature>``. Local: ``inliers_knee`` (softplus above the rule's knee),
    ``inliers_log``, ``ratio``, ``closeness``, ``votes_log``. Global: ``z_knee`` (softplus above
    the rule's knee) and ``z_shift`` (z − Z_FLOOR, floored at 0).
    """
    if branch.kind == "local":
        ev = local_evidence(pairs, branch, rule)
        knee = np.where(ev.present, softplus(ev.inliers - rule.local_knee), 0.0)
        features = {
            "inliers_knee": knee,
            "inliers_log": np.log1p(ev.inliers),
            "ratio": ev.ratio,
            "closeness": np.where(ev.present, ev.closeness, 0.0),
            "votes_log": ev.log_votes,
        }
    else:
        z = background.z(_column(pairs, branch.column))
        features = {
            "z_knee": np.nan_to_num(softplus(z - rule.global_knee)),
            "z_shift": np.nan_to_num(np.maximum(z - Z_FLOOR, 0.0)),
        }
    return {f"{branch.name}:{name}": values for name, values in features.items()}


def feature_table(
    pairs: pd.DataFrame, rule: RuleConstants, stats: Mapping[str, Background] | None = None
) -> pd.DataFrame:
    """Every branch's :func:`branch_features`, one column each, in branch order."""
    branches = find_branches(pairs)
    stats = backgrounds(pairs, branches) if stats is None else stats
    columns: dict[str, np.ndarray] = {}
    for branch in branches:
        columns.update(branch_features(pairs, branch, stats.get(branch.name), rule))
    return pd.DataFrame(columns, index=pairs.index)


@dataclass(frozen=True)
class FusionModel:
    """A fitted logistic fusion: ``ℓ = intercept + Σ weights · features``, weights ≥ 0."""

    features: tuple[str, ...]
    weights: tuple[float, ...]
    intercept: float
    rule: RuleConstants  # the knees the features were computed with
    n_pairs: int = 0
    n_positives: int = 0

    def __post_init__(self) -> None:
        if len(self.features) != len(self.weights):
            raise ValueError("a fusion model needs one weight per feature")
        if any(w < 0 or not math.isfinite(w) for w in self.weights):
            raise ValueError("fusion model weights must be finite and >= 0 (monotone fusion)")

    def log_odds(
        self, pairs: pd.DataFrame, stats: Mapping[str, Background] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Fused log-odds and each branch's share (intercept + its own terms; NaN if absent)."""
        table = feature_table(pairs, self.rule, stats)
        missing = [f for f in self.features if f not in table.columns]
        unused = sorted(set(table.columns) - set(self.features))
        if missing:
            logger.warning("features absent from the pairs count as 0: %s", missing)
        if unused:
            logger.warning("the fusion model ignores these features: %s", unused)
        total = np.full(len(pairs), self.intercept)
        shares: dict[str, np.ndarray] = {}
        for name, weight in zip(self.features, self.weights, strict=True):
            values = table[name].to_numpy() if name in table.columns else np.zeros(len(pairs))
            total = total + weight * values
            branch = name.split(":", 1)[0]
            shares[branch] = shares.get(branch, self.intercept) + weight * values
        return total, shares

    def apply(
        self, pairs: pd.DataFrame, stats: Mapping[str, Background] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Fused score in (0, 1) and every branch's own score (NaN where it has no evidence)."""
        branches = {b.name: b for b in find_branches(pairs)}
        stats = backgrounds(pairs, list(branches.values())) if stats is None else stats
        total, shares = self.log_odds(pairs, stats)
        branch_scores = {}
        for name, branch in branches.items():
            share = shares.get(name, np.full(len(pairs), self.intercept))
            branch_scores[name] = np.where(_present(pairs, branch), squash(share), np.nan)
        return squash(total), branch_scores

    def to_json(self, path: str | os.PathLike) -> None:
        """Write the model atomically as JSON."""
        document = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "intercept": self.intercept,
            "weights": dict(zip(self.features, self.weights, strict=True)),
            "rule": asdict(self.rule),
            "n_pairs": self.n_pairs,
            "n_positives": self.n_positives,
        }
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(document, indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> FusionModel:
        """Read a model written by :meth:`to_json`; a foreign or malformed file is a ValueError."""
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
            if document.get("format") != MODEL_FORMAT:
                raise ValueError(f"not a {MODEL_FORMAT} file")
            if document.get("version") != MODEL_VERSION:
                raise ValueError(f"unsupported version {document.get('version')!r}")
            weights = document["weights"]
            return cls(
                features=tuple(weights),
                weights=tuple(float(w) for w in weights.values()),
                intercept=float(document["intercept"]),
                rule=RuleConstants.from_mapping(document["rule"]),
                n_pairs=int(document.get("n_pairs", 0)),
                n_positives=int(document.get("n_positives", 0)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{path}: bad fusion model: {error}") from None


def _present(pairs: pd.DataFrame, branch: Branch) -> np.ndarray:
    return np.isfinite(_column(pairs, branch.column))


def label_pairs(pairs: pd.DataFrame, ground_truth: GroundTruth) -> np.ndarray:
    """bool [n]: whether each (query_id, reference_id) is a ground-truth copy pair.

    Pairs of queries the ground truth does not list count as negatives (as in ISC2021's
    metric); their number is logged.
    """
    positives = {(m.query, m.db) for m in ground_truth.matches}
    keys = zip(pairs["query_id"], pairs["reference_id"], strict=True)
    labels = np.fromiter((key in positives for key in keys), dtype=bool, count=len(pairs))
    unlisted = int((~pairs["query_id"].isin(ground_truth.query_ids)).sum())
    if unlisted:
        logger.warning(
            "%d pairs of queries absent from the ground truth count as negatives", unlisted
        )
    return labels


def _logistic_loss(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean log-loss + l2·|w[1:]|², its gradient and Hessian (column 0 of x is the intercept)."""
    s = x @ w
    p = np.exp(-np.logaddexp(0.0, -s))  # σ(s) without overflow
    penalty = np.r_[0.0, np.full(len(w) - 1, l2)]
    loss = float(np.mean(np.logaddexp(0.0, s) - y * s) + np.sum(penalty * w * w))
    grad = x.T @ (p - y) / len(y) + 2.0 * penalty * w
    hess = (x * (p * (1.0 - p))[:, None]).T @ x / len(y) + np.diag(2.0 * penalty + 1e-12)
    return loss, grad, hess


def _projected_newton(
    x: np.ndarray, y: np.ndarray, l2: float, max_iter: int = 100, tol: float = 1e-9
) -> np.ndarray:
    """min loss s.t. w[1:] ≥ 0 (Bertsekas' projected Newton: Newton on the free variables,
    projection + Armijo backtracking). Deterministic: no random start, fixed iteration order."""
    w = np.zeros(x.shape[1])
    loss, grad, hess = _logistic_loss(x, y, w, l2)
    for _ in range(max_iter):
        # Bound variables at 0 whose gradient pushes them below stay fixed this step.
        free = np.ones(len(w), dtype=bool)
        free[1:] = (w[1:] > 1e-12) | (grad[1:] < 0)
        step = np.zeros(len(w))
        step[free] = np.linalg.solve(hess[np.ix_(free, free)], -grad[free])
        t = 1.0
        while t > 1e-10:
            candidate = w + t * step
            candidate[1:] = np.maximum(candidate[1:], 0.0)
            new_loss, new_grad, new_hess = _logistic_loss(x, y, candidate, l2)
            if new_loss <= loss + 1e-4 * grad @ (candidate - w):
                break
            t /= 2.0
        else:
            break  # no descent left along the projected path
        converged = loss - new_loss < tol
        w, loss, grad, hess = candidate, new_loss, new_grad, new_hess
        if converged:
            break
    return w


def fit_logistic(
    pairs: pd.DataFrame,
    labels: np.ndarray,
    l2: float = 1e-3,
    rule: RuleConstants | None = None,
) -> FusionModel:
    """Fit a monotone logistic fusion on labeled pairs (``labels``: bool, one per row).

    Features (:func:`feature_table`) are standardized for the fit so ``l2`` penalizes all of
    them alike; the weights are constrained to be ≥ 0 (so the score is non-decreasing in every
    evidence column) and mapped back to raw feature units. Constant features get weight 0.
    """
    return fit_logistic_groups([(pairs, labels)], l2, rule)


def fit_logistic_groups(
    groups: Sequence[tuple[pd.DataFrame, np.ndarray]],
    l2: float = 1e-3,
    rule: RuleConstants | None = None,
) -> FusionModel:
    """:func:`fit_logistic` on the labeled pairs of several runs (a development run, a run's
    reviewed pairs): each group's features use its own global backgrounds, as rule fuse
    computes them from the run it scores; a feature one group lacks is 0 there."""
    rule = rule or RuleConstants()
    tables, targets = [], []
    for pairs, labels in groups:
        if len(labels) != len(pairs):
            raise ValueError(f"{len(labels)} labels for {len(pairs)} pairs")
        tables.append(feature_table(pairs, rule))
        targets.append(np.asarray(labels, dtype=np.float64))
    labels = np.concatenate(targets) if targets else np.zeros(0)
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise ValueError("fitting a fusion model needs both positive and negative pairs")
    table = pd.concat(tables, ignore_index=True).fillna(0.0) if len(tables) > 1 else tables[0]
    raw = table.to_numpy(dtype=np.float64)
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    varying = std > 1e-12
    standardized = np.where(varying, (raw - mean) / np.where(varying, std, 1.0), 0.0)
    w = _projected_newton(np.c_[np.ones(len(raw)), standardized], labels, l2)
    weights = np.where(varying, w[1:] / np.where(varying, std, 1.0), 0.0)
    intercept = float(w[0] - np.sum(weights * mean))
    model = FusionModel(
        tuple(table.columns),
        tuple(float(v) for v in weights),
        intercept,
        rule,
        n_pairs=len(labels),
        n_positives=int(labels.sum()),
    )
    logger.info(
        "logistic fusion on %d pairs (%d positive): intercept %.3f, weights %s",
        model.n_pairs,
        model.n_positives,
        intercept,
        {f: round(v, 4) for f, v in zip(model.features, model.weights, strict=True)},
    )
    return model


# --- pair tables in, scored pairs and predictions out --------------------------------------------


def _crop_local_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Prefix a crop-local pair table's evidence: ``local_votes`` → ``crop_local_votes``,
    ``inliers`` → ``crop_local_inliers``; the keys stay; ``reference_shard`` is dropped (the
    full-query table has it, or it is filled in after the join)."""
    renames = {
        c: (CROP_PREFIX + c if c.startswith("local_") else CROP_LOCAL_PREFIX + c)
        for c in table.columns
        if c not in KEYS and c != "reference_shard"
    }
    return table.rename(columns=renames)


def _unique_pairs(table: pd.DataFrame, what: str) -> pd.DataFrame:
    """One row per (query, reference): the one with the most inliers (a pair appears in one
    query shard only, so a repeat means overlapping shards; it is logged, not fatal)."""
    repeated = int(table.duplicated(KEYS).sum())
    if not repeated:
        return table
    logger.warning(
        "%d repeated (query, reference) rows in the %s tables: best kept", repeated, what
    )
    inliers = next((c for c in ("inliers", f"{CROP_LOCAL_PREFIX}inliers") if c in table), None)
    order = KEYS + ([inliers] if inliers else [])
    ascending = [True, True] + ([False] if inliers else [])
    table = table.sort_values(order, ascending=ascending, kind="stable")
    return table.drop_duplicates(KEYS, keep="first")


def join_pair_tables(
    tables: Sequence[pd.DataFrame], crop_tables: Sequence[pd.DataFrame] = ()
) -> pd.DataFrame:
    """All pair tables as one, sorted by (query_id, reference_id), one row per pair.

    Crop-local tables (their ``query_id`` is the query the crop was cut from) are outer-joined
    on (query_id, reference_id) with their columns prefixed ``crop_local_`` / ``crop_``, so a
    pair found only through the crop has NaN full-query evidence and vice versa.
    """
    frames = [t for t in tables if len(t.columns)]
    pairs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=KEYS)
    pairs = _unique_pairs(pairs, "pair")
    crops = [_crop_local_columns(t) for t in crop_tables if len(t.columns)]
    if crops:
        crop = _unique_pairs(pd.concat(crops, ignore_index=True), "crop pair")
        pairs = pairs.merge(crop, on=KEYS, how="outer")
    pairs = pairs.sort_values(KEYS, kind="stable").reset_index(drop=True)
    logger.info(
        "%d pairs of %d queries; branches: %s",
        len(pairs),
        pairs["query_id"].nunique(),
        ", ".join(b.name for b in find_branches(pairs)) or "none",
    )
    return pairs


def score_pairs(
    pairs: pd.DataFrame, params: FusionParams, model: FusionModel | None = None
) -> pd.DataFrame:
    """The scored pair table: ``query_id, reference_id, score``, one ``branch_<name>`` column
    per branch (its own score, NaN where it has no evidence), then the evidence columns.

    Uses the rule, or ``model`` when ``params.method`` is ``logistic``.
    """
    if params.method == "logistic":
        if model is None:
            raise ValueError("fusion.method is 'logistic' but no fitted model was given")
        score, branch_scores = model.apply(pairs)
    else:
        score, branch_scores = fuse_rule(pairs, RuleConstants())
    scored = pairs.loc[:, KEYS].copy()
    scored["score"] = score
    for name, values in branch_scores.items():
        scored[f"branch_{name}"] = values
    evidence = pairs.drop(columns=KEYS)
    return pd.concat([scored, evidence], axis=1)


def branch_names(scored: pd.DataFrame) -> list[str]:
    """Branches of a scored pair table, in column order."""
    return [c.removeprefix("branch_") for c in scored.columns if c.startswith("branch_")]


def fused_predictions(scored: pd.DataFrame, params: FusionParams) -> pd.DataFrame:
    """``query_id, reference_id, score``: top-k per query, then the cap (see predictions.py)."""
    if scored.empty:
        return empty_predictions()
    predictions = select_predictions(scored, params.top_k_per_query, params.max_predictions)
    logger.info(
        "%d predictions for %d queries (score range %.4g–%.4g)",
        len(predictions),
        predictions["query_id"].nunique(),
        predictions["score"].min() if len(predictions) else np.nan,
        predictions["score"].max() if len(predictions) else np.nan,
    )
    return predictions


def read_scored_pairs(path: str | os.PathLike) -> pd.DataFrame:
    """Read the scored pair table of rule fuse (ids as exact strings)."""
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in (*KEYS, "score") if c not in header]
    if missing:
        raise ValueError(f"{path}: not a scored pair table (no {', '.join(missing)} column)")
    return read_table(path)
