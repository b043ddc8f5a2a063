"""Pair verification: Lowe ratio-test matching of RootSIFT descriptors, then a RANSAC fit.

For a candidate (query, reference) pair, every query descriptor is matched to its nearest
reference descriptor when that one is clearly closer than the second nearest (ratio test); a
RANSAC fit of a similarity (``partial_affine``: rotation, uniform scale, shift), an affine map
(``affine``: also stretch and shear, as aspect-ratio changes and skews make), the better of
the two (``similarity_or_affine``) or a homography then separates geometrically consistent
matches (inliers) from chance ones.

Two known weaknesses of the ISC2021 image-fingerprint matcher are fixed here:

* Degenerate fits: many query keypoints can match one reference keypoint (repeated texture,
  keypoints duplicated at several orientations), and RANSAC happily counts them all. The
  effective inlier count is the number of *distinct* positions among the inliers, on both sides
  (the smaller of the two). Fits whose scale is implausible are rejected outright.
* Flips: SIFT descriptors are not mirror-invariant, so a mirrored copy yields almost no
  matches. The mirrored query's SIFT (rule ``mirror_sift``'s shard) is verified too, except
  where the local search's votes clearly single out one view, the query or its mirror
  (``flip_vote_ratio``, :func:`views_to_match`).

RANSAC is seeded before each fit so the evidence is reproducible.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Literal

import cv2
import numpy as np
import pandas as pd

from copydetect.params import config_params
from copydetect.progress import Progress
from copydetect.shards import SiftFeatures, read_sift_rows
from copydetect.tables import ID_COLUMNS
from copydetect.threads import set_blas_threads, single_blas_thread, single_thread

logger = logging.getLogger(__name__)

# Distance of two orthogonal non-negative unit vectors: the largest RootSIFT distance, used as
# the mean match distance of a pair without matches.
MAX_DISTANCE = math.sqrt(2.0)
# Minimal point count of each model (OpenCV refuses fewer).
_MIN_POINTS = {"partial_affine": 2, "affine": 3, "homography": 4, "similarity_or_affine": 2}


@config_params("verify")
class VerifyParams:
    """Parameters of pair verification (the ``verify`` section of the config)."""

    ratio: float
    method: Literal["similarity_or_affine", "partial_affine", "affine", "homography"]
    affine_margin: int  # similarity_or_affine: inliers an affine fit must add to be kept
    global_only_max_rank: int  # a pair only global models proposed: verified up to this rank
    reprojection_threshold: float  # pixels of the shrunk SIFT images
    try_flip: bool
    flip_vote_ratio: float | None  # try_flip: one view when its votes are ≥ this × the other's
    min_scale: float  # query→reference scale bounds; outside them a fit is degenerate
    max_scale: float
    min_matches_for_fit: int  # fewer ratio-test matches: no fit (random matches fit exactly)
    max_anisotropy: float  # affine, homography: ratio of the linear part's singular values
    position_tolerance: float  # inlier keypoints in the same cell of this size count once
    ransac_max_iters: int
    ransac_confidence: float
    seed: int


@dataclass(frozen=True)
class GeometryFit:
    """A RANSAC fit mapping query keypoints onto reference keypoints.

    ``inliers`` is the effective count (distinct positions, 0 for rejected fits);
    ``inlier_mask`` marks RANSAC's inliers among the matches (all False when rejected).
    """

    inlier_mask: np.ndarray  # bool [n_matches]
    matrix: np.ndarray | None  # 2×3 (the affine methods) or 3×3 (homography); None: rejected
    scale: float  # query→reference scale; NaN when rejected
    inliers: int
    raw_inliers: int  # RANSAC's own count, before the distinct-position reduction


@dataclass(frozen=True)
class PairEvidence:
    """What verification found for one candidate pair (one row of the pairs table)."""

    query_id: str
    reference_id: str
    matches: int  # ratio-test matches
    inliers: int  # effective (distinct-position) RANSAC inliers
    raw_inliers: int
    inlier_ratio: float  # inliers / matches (0 without matches)
    scale: float  # query→reference scale of the fit; NaN without an accepted fit
    flipped: bool  # the evidence comes from the mirrored query
    mean_match_distance: float  # mean L2 distance of the unit RootSIFT of the counted matches


# Which query views a pair is matched in: the query and its mirror, or one of them.
MatchedViews = Literal["both", "query", "mirror"]

_EVIDENCE_FIELDS = tuple(f.name for f in fields(PairEvidence))
EVIDENCE_COLUMNS = tuple(f.name for f in fields(PairEvidence) if f.name not in ID_COLUMNS)


def ratio_test_matches(q_desc: np.ndarray, r_desc: np.ndarray, ratio: float) -> np.ndarray:
    """Lowe's ratio test: rows ``(query index, reference index)`` of the accepted matches.

    Distances are L2 on the uint8 RootSIFT as float32. Every value is an integer and every
    partial sum stays below 2**24 in magnitude, so the float32 arithmetic is exact: results do
    not depend on summation order, threads or BLAS. With fewer than two reference descriptors
    there is no second neighbour to compare with, hence no match.
    """
    return ratio_test_views([q_desc], r_desc, ratio)[0]


@dataclass(frozen=True)
class StackedViews:
    """Query views (the query and its mirror) stacked for :func:`ratio_test_stacked`, built
    once per query and reused for each of its candidate references."""

    augmented: np.ndarray  # float32 [n, 129]: the descriptors, then a column of ones
    squared_norms: np.ndarray  # float32 [n]
    sizes: tuple[int, ...]  # rows of each view, in order

    def select(self, index: int) -> StackedViews:
        """View ``index`` alone (row slices: no copy)."""
        start = sum(self.sizes[:index])
        stop = start + self.sizes[index]
        return StackedViews(
            self.augmented[start:stop], self.squared_norms[start:stop], (self.sizes[index],)
        )


def stack_views(views: Sequence[np.ndarray]) -> StackedViews:
    """Stack the views' uint8 descriptors as float32 with the ones column of the product."""
    sizes = tuple(len(view) for view in views)
    augmented = np.ones((sum(sizes), 129), dtype=np.float32)
    if sizes and sum(sizes):
        augmented[:, :128] = np.concatenate([np.asarray(v).reshape(-1, 128) for v in views])
    q = augmented[:, :128]
    return StackedViews(augmented, np.einsum("ij,ij->i", q, q), sizes)


def _augmented_reference(r_desc: np.ndarray) -> np.ndarray:
    """float32 [m, 129]: ``-2 r`` then ``|r|²``, so that one product gives ``|r|² - 2 q·r``."""
    r = np.asarray(r_desc, dtype=np.float32)
    augmented = np.empty((len(r), 129), dtype=np.float32)
    np.multiply(r, -2.0, out=augmented[:, :128])
    augmented[:, 128] = np.einsum("ij,ij->i", r, r)
    return augmented


def ratio_test_views(
    views: Sequence[np.ndarray], r_desc: np.ndarray, ratio: float
) -> list[np.ndarray]:
    """:func:`ratio_test_matches` of several query views (the query and its mirror) against one
    reference, with one distance product for all views: each row's distances are exact
    integers, so stacking the views changes no match, only the per-call overhead."""
    return ratio_test_stacked(stack_views(views), r_desc, ratio)


def ratio_test_stacked(stacked: StackedViews, r_desc: np.ndarray, ratio: float) -> list[np.ndarray]:
    """:func:`ratio_test_views` of views already stacked by :func:`stack_views`."""
    if len(stacked.augmented) == 0 or len(r_desc) < 2:
        return [np.zeros((0, 2), dtype=np.int64) for _ in stacked.sizes]
    # |q - r|² - |q|² = |r|² - 2 q·r: one BLAS product (numpy's OpenBLAS, one thread in the
    # workers) with |r|² folded in as a 129th column, no pass over the matrix to add it.
    d2 = stacked.augmented @ _augmented_reference(r_desc).T
    rows = np.arange(len(d2))
    first = d2.argmin(axis=1)
    d_first = d2[rows, first]
    d2[rows, first] = np.inf
    d_second = d2.min(axis=1)
    q_sq = stacked.squared_norms
    # Compare squared distances: d1 < ratio * d2  ⇔  d1² < ratio² d2² (both non-negative).
    keep = (d_first + q_sq) < (ratio * ratio) * (d_second + q_sq)
    matches = []
    start = 0
    for size in stacked.sizes:
        view_rows = np.flatnonzero(keep[start : start + size])
        matches.append(np.stack([view_rows, first[start + view_rows]], axis=1).astype(np.int64))
        start += size
    return matches


def count_distinct(points: np.ndarray, tolerance: float) -> int:
    """Number of distinct positions among ``points`` [n, 2], on a grid of ``tolerance`` pixels."""
    if len(points) == 0:
        return 0
    cells = np.floor(points / tolerance).astype(np.int64)
    # One int64 key per cell (np.unique on rows is several times slower): cells are image
    # positions (far below 2**31 cells a side), so the key is unique per (x, y) cell.
    return len(np.unique((cells[:, 0] << 32) + cells[:, 1]))


def _run_ransac(src: np.ndarray, dst: np.ndarray, method: str, params: VerifyParams):
    """One RANSAC fit of ``method`` (seeded: OpenCV's RNG is per thread, seeded right here)."""
    cv2.setRNGSeed(params.seed)
    if method == "homography":
        return cv2.findHomography(
            src,
            dst,
            cv2.RANSAC,
            params.reprojection_threshold,
            maxIters=params.ransac_max_iters,
            confidence=params.ransac_confidence,
        )
    estimate = cv2.estimateAffine2D if method == "affine" else cv2.estimateAffinePartial2D
    return estimate(
        src,
        dst,
        method=cv2.RANSAC,
        ransacReprojThreshold=params.reprojection_threshold,
        maxIters=params.ransac_max_iters,
        confidence=params.ransac_confidence,
    )


def fit_scale(matrix: np.ndarray, params: VerifyParams) -> float:
    """Query→reference scale of a fit, or NaN when its linear part is degenerate.

    A homography is judged by its linear part after normalizing ``H[2, 2]`` (the local map near
    the origin). The linear part must keep orientation (mirrors come through the flip path) and
    be at most ``max_anisotropy`` times more stretched one way than the other (a similarity
    never is; an affine map or homography that collapses the points onto a line is).
    """
    linear = matrix[:2, :2]
    if matrix.shape[0] == 3:
        if abs(matrix[2, 2]) < 1e-12:
            return math.nan
        linear = linear / matrix[2, 2]
    det = float(np.linalg.det(linear))
    if not np.isfinite(det) or det <= 0:
        return math.nan
    singular = np.linalg.svd(linear, compute_uv=False)
    if singular[0] > params.max_anisotropy * singular[1]:
        return math.nan
    return math.sqrt(det)


def _rejected(n_matches: int, raw_inliers: int = 0) -> GeometryFit:
    return GeometryFit(np.zeros(n_matches, dtype=bool), None, math.nan, 0, raw_inliers)


def fit_geometry(
    q_kp: np.ndarray, r_kp: np.ndarray, matches: np.ndarray, params: VerifyParams
) -> GeometryFit:
    """RANSAC fit of the matched keypoints, with degenerate fits rejected (see module doc)."""
    n = len(matches)
    if n < max(params.min_matches_for_fit, _MIN_POINTS[params.method]):
        return _rejected(n)
    src = np.ascontiguousarray(q_kp[matches[:, 0], :2], dtype=np.float32)
    dst = np.ascontiguousarray(r_kp[matches[:, 1], :2], dtype=np.float32)
    if params.method != "similarity_or_affine":
        return _fit(src, dst, params.method, params)
    similarity = _fit(src, dst, "partial_affine", params)
    # The affine fit can add more than the margin only when that many matches are left out:
    # pairs with few matches (most unrelated ones) and clean copies never pay for its RANSAC.
    if n <= similarity.inliers + params.affine_margin:
        return similarity
    affine = _fit(src, dst, "affine", params)
    return affine if affine.inliers > similarity.inliers + params.affine_margin else similarity


def _fit(src: np.ndarray, dst: np.ndarray, method: str, params: VerifyParams) -> GeometryFit:
    n = len(src)
    matrix, mask = _run_ransac(src, dst, method, params)
    if matrix is None or mask is None:
        return _rejected(n)
    mask = mask.ravel().astype(bool)
    scale = fit_scale(matrix, params)
    if not (params.min_scale <= scale <= params.max_scale):  # NaN fails too
        return _rejected(n, int(mask.sum()))
    distinct = min(
        count_distinct(src[mask], params.position_tolerance),
        count_distinct(dst[mask], params.position_tolerance),
    )
    return GeometryFit(mask, matrix, scale, distinct, int(mask.sum()))


def _mean_distance(query: SiftFeatures, reference: SiftFeatures, matches: np.ndarray) -> float:
    """Mean L2 distance of the matched descriptors, as unit vectors (÷255)."""
    if len(matches) == 0:
        return MAX_DISTANCE
    q = query.descriptors[matches[:, 0]].astype(np.float32)
    r = reference.descriptors[matches[:, 1]].astype(np.float32)
    return float(np.linalg.norm(q - r, axis=1).mean() / 255.0)


def _evidence(
    query: SiftFeatures,
    reference: SiftFeatures,
    matches: np.ndarray,
    params: VerifyParams,
    flipped: bool,
) -> PairEvidence:
    fit = fit_geometry(query.keypoints, reference.keypoints, matches, params)
    # The distance is averaged over the matches that count: the inliers when there are any.
    counted = matches[fit.inlier_mask] if fit.inliers else matches
    return PairEvidence(
        query_id=query.id,
        reference_id=reference.id,
        matches=len(matches),
        inliers=fit.inliers,
        raw_inliers=fit.raw_inliers,
        inlier_ratio=fit.inliers / len(matches) if len(matches) else 0.0,
        scale=fit.scale,
        flipped=flipped,
        mean_match_distance=_mean_distance(query, reference, counted),
    )


def _verify_one(
    query: SiftFeatures, reference: SiftFeatures, params: VerifyParams, flipped: bool
) -> PairEvidence:
    matches = ratio_test_matches(query.descriptors, reference.descriptors, params.ratio)
    return _evidence(query, reference, matches, params, flipped)


def verify_pair(
    query: SiftFeatures,
    reference: SiftFeatures,
    params: VerifyParams,
    query_flipped: SiftFeatures | None = None,
) -> PairEvidence:
    """Verify a pair; with ``try_flip`` and the mirrored query's features, keep the better one
    (more inliers; a tie keeps the unflipped evidence)."""
    if not (params.try_flip and query_flipped is not None):
        return _verify_one(query, reference, params, flipped=False)
    views = stack_views([query.descriptors, query_flipped.descriptors])
    return verify_stacked(query, query_flipped, views, reference, params)


def verify_stacked(
    query: SiftFeatures,
    query_flipped: SiftFeatures,
    views: StackedViews,
    reference: SiftFeatures,
    params: VerifyParams,
    matched: MatchedViews = "both",
) -> PairEvidence:
    """:func:`verify_pair` with the flip, the query's two views stacked once by the caller
    (:func:`stack_views` of its and its mirror's descriptors) for all its references.
    ``matched`` restricts the matching to one view (:func:`views_to_match`)."""
    if matched != "both":
        flipped = matched == "mirror"
        view = views.select(int(flipped))
        (matches,) = ratio_test_stacked(view, reference.descriptors, params.ratio)
        return _evidence(query_flipped if flipped else query, reference, matches, params, flipped)
    matches, mirrored_matches = ratio_test_stacked(views, reference.descriptors, params.ratio)
    evidence = _evidence(query, reference, matches, params, flipped=False)
    # The effective inliers never exceed the matches: a mirror with no more matches than the
    # query has inliers cannot win, so its RANSAC fit is skipped (same evidence, less work).
    if len(mirrored_matches) <= evidence.inliers:
        return evidence
    mirrored = _evidence(query_flipped, reference, mirrored_matches, params, flipped=True)
    return mirrored if mirrored.inliers > evidence.inliers else evidence


# --- Candidate tables: loading only what is verified, verifying in worker processes ---------


@dataclass
class _Inputs:
    """Everything the workers read; set before forking so they share it copy-on-write."""

    queries: dict[str, SiftFeatures]
    mirrored: dict[str, SiftFeatures]  # the mirrored queries' (empty without try_flip)
    references: dict[tuple[str, str], SiftFeatures]  # (shard, id) -> features
    params: VerifyParams


_INPUTS: _Inputs | None = None


def _init_worker() -> None:
    # Parallelism is one process per worker; OpenCV threads inside them would oversubscribe, and
    # so would the BLAS pool behind the distance product (numpy's OpenBLAS, one thread per core
    # by default, each spinning while it waits: 1.5x the CPU seconds of one thread). The
    # distances are exact integers, so the thread count cannot change a match.
    cv2.setNumThreads(1)
    set_blas_threads(1)


# One pair to verify: its row, its reference's (shard, id) key and the views it is matched in.
_Item = tuple[int, tuple[str, str], MatchedViews]


def _verify_query(task: tuple[str, list[_Item]]) -> list[tuple[int, dict]]:
    """Verify every candidate of one query (and of its mirror, with ``try_flip``)."""
    query_id, items = task
    inputs = _INPUTS
    assert inputs is not None, "verify worker started without inputs"
    query = inputs.queries[query_id]
    mirrored = inputs.mirrored.get(query_id)
    if not (inputs.params.try_flip and mirrored is not None):
        return [
            (row, _as_record(verify_pair(query, inputs.references[key], inputs.params)))
            for row, key, _ in items
        ]
    views = stack_views([query.descriptors, mirrored.descriptors])
    return [
        (
            row,
            _as_record(
                verify_stacked(
                    query, mirrored, views, inputs.references[key], inputs.params, matched
                )
            ),
        )
        for row, key, matched in items
    ]


def _as_record(evidence: PairEvidence) -> dict:
    """The evidence as a flat dict (``dataclasses.asdict`` deep-copies: 10x slower)."""
    return {name: getattr(evidence, name) for name in _EVIDENCE_FIELDS}


def _load_inputs(
    candidates: pd.DataFrame,
    query_sift_path: str | os.PathLike,
    mirrored_sift_path: str | os.PathLike | None,
    reference_sift_paths: Mapping[str, str | os.PathLike],
    params: VerifyParams,
) -> _Inputs:
    query_ids = sorted(set(candidates["query_id"]))
    mirrored: dict[str, SiftFeatures] = {}
    if params.try_flip:
        if mirrored_sift_path is None:
            raise ValueError("verify.try_flip needs the mirrored queries' SIFT shard")
        mirrored = read_sift_rows(mirrored_sift_path, query_ids)
    references: dict[tuple[str, str], SiftFeatures] = {}
    for shard, group in candidates.groupby("reference_shard", sort=True):
        if shard not in reference_sift_paths:
            raise KeyError(f"candidates name reference shard {shard!r} without a SIFT shard")
        rows = read_sift_rows(reference_sift_paths[shard], list(group["reference_id"]))
        references.update({(shard, ref_id): feats for ref_id, feats in rows.items()})
    queries = read_sift_rows(query_sift_path, query_ids)
    return _Inputs(queries, mirrored, references, params)


def pairs_to_verify(candidates: pd.DataFrame, global_only_max_rank: int) -> np.ndarray:
    """Which candidate pairs to verify (bool per row): every pair a local search proposed
    (a ``*_votes`` column set), and a pair that only global models proposed when one of them
    ranks it within ``global_only_max_rank`` (its ``*_rank`` columns).

    On the benchmarks half the pairs came from global models alone, and their verification
    almost never found a copy (one with 6+ inliers among 18,324 on bench, bench2 and the demo,
    a rank-1 pair) while costing half of verify's time: below that rank their local evidence
    stays empty.
    """

    def numbers(suffix: str) -> np.ndarray:  # [rows, columns ending in suffix], NaN = absent
        columns = [c for c in candidates.columns if c.endswith(suffix)]
        table = candidates[columns].apply(pd.to_numeric, errors="coerce")
        return table.to_numpy(dtype=np.float64).reshape(len(candidates), len(columns))

    proposed_locally = np.isfinite(numbers("_votes")).any(axis=1)
    best_rank = np.fmin.reduce(numbers("_rank"), axis=1, initial=np.inf)
    return proposed_locally | (best_rank <= global_only_max_rank)


def views_to_match(candidates: pd.DataFrame, params: VerifyParams) -> list[MatchedViews]:
    """The views each candidate pair is matched in.

    With ``try_flip`` and a ``flip_vote_ratio``, a pair that the local search voted for through
    one view at least ``flip_vote_ratio`` times as often as through the other (the query's
    ``local_votes``, its mirror's ``local_mirrored_votes``; a view that did not propose the pair
    counts 0) is matched in that view only. Most pairs come from one view alone, and the other
    view's fit almost never wins for them, while it costs half of each distance product. Near
    ties (symmetric images) and global-only pairs (no votes) match both views, and so does every
    pair of a table without both vote columns (the local crops, ``local.mirrored_queries: false``).
    """
    columns = ("local_votes", "local_mirrored_votes")
    ratio = params.flip_vote_ratio
    if not params.try_flip or ratio is None or not set(columns) <= set(candidates.columns):
        return ["both"] * len(candidates)
    query, mirror = (
        pd.to_numeric(candidates[c], errors="coerce").fillna(0).to_numpy(dtype=np.float64)
        for c in columns
    )
    only_query = (query > 0) & (query >= ratio * mirror)
    only_mirror = (mirror > 0) & (mirror >= ratio * query)
    # ratio ≤ 1 could single out both views of a tie: the query's then wins (it was first).
    return np.where(only_query, "query", np.where(only_mirror, "mirror", "both")).tolist()


def _tasks(candidates: pd.DataFrame, params: VerifyParams) -> list[tuple[str, list[_Item]]]:
    """One task per query: its candidate rows with their reference keys and views."""
    candidates = candidates.assign(_views=views_to_match(candidates, params))
    tasks = []
    for query_id, group in candidates.groupby("query_id", sort=True):
        keys = zip(group["reference_shard"], group["reference_id"], strict=True)
        tasks.append((query_id, list(zip(group.index, keys, group["_views"], strict=True))))
    return tasks


def verify_candidates(
    candidates: pd.DataFrame,
    query_sift_path: str | os.PathLike,
    mirrored_sift_path: str | os.PathLike | None,
    reference_sift_paths: Mapping[str, str | os.PathLike],
    params: VerifyParams,
    processes: int = 1,
) -> pd.DataFrame:
    """Verify the candidate pairs (:func:`pairs_to_verify`); return every candidate row with
    the evidence columns, empty (NA) on the rows not verified.

    ``candidates`` needs ``query_id``, ``reference_id`` and ``reference_shard`` (a key of
    ``reference_sift_paths``); other columns pass through. ``mirrored_sift_path`` is the SIFT
    shard of the mirrored queries (needed with ``try_flip``, unused without). Rows come back
    sorted by (query_id, reference_id), ties in input order, and the result does not depend on
    ``processes``: each pair's evidence is a pure function of its inputs.
    """
    global _INPUTS
    table = candidates.sort_values(["query_id", "reference_id"], kind="stable")
    table = table.reset_index(drop=True)
    table = table.drop(columns=[c for c in EVIDENCE_COLUMNS if c in table.columns])
    selected = table[pairs_to_verify(table, params.global_only_max_rank)]
    logger.info(
        "%d of %d candidate pairs to verify (the others only global models proposed, "
        "ranked below %d)",
        len(selected),
        len(table),
        params.global_only_max_rank,
    )
    if selected.empty:
        return _attach_evidence(table, [])
    _INPUTS = _load_inputs(
        selected, query_sift_path, mirrored_sift_path, reference_sift_paths, params
    )
    tasks = _tasks(selected, params)
    one_view = sum(matched != "both" for _, items in tasks for *_, matched in items)
    logger.info("%d of them matched in one view only (verify.flip_vote_ratio)", one_view)
    processes = max(1, min(processes, len(tasks)))
    progress = Progress(len(selected), "candidate pairs verified", log=logger)
    try:
        if processes == 1:
            with single_blas_thread():
                _init_worker()
                results = _counted((_verify_query(task) for task in tasks), progress)
        else:
            context = multiprocessing.get_context("fork")
            # A forked child that calls cv2.setNumThreads hangs when the parent's pool has
            # threads (fork does not copy them): the parent stays at one while workers live.
            with (
                single_thread(cv2.getNumThreads, cv2.setNumThreads),
                context.Pool(processes, initializer=_init_worker) as pool,
            ):
                results = _counted(pool.imap_unordered(_verify_query, tasks, chunksize=1), progress)
    finally:
        _INPUTS = None
    progress.done()
    return _attach_evidence(table, [item for chunk in results for item in chunk])


def _counted(
    chunks: Iterable[list[tuple[int, dict]]], progress: Progress
) -> list[list[tuple[int, dict]]]:
    """Collect each query's results as they come back (from the pool: in the parent), counting
    its pairs."""
    results = []
    for chunk in chunks:
        results.append(chunk)
        progress.advance(len(chunk))
    return results


def _attach_evidence(table: pd.DataFrame, results: list[tuple[int, dict]]) -> pd.DataFrame:
    """Join the evidence to its rows by row number (the workers finish in any order); rows
    without evidence (not verified) get NA: counts stay integers, ``flipped`` a boolean."""
    results.sort(key=lambda item: item[0])
    evidence = pd.DataFrame(
        [record for _, record in results], index=[r for r, _ in results], columns=_EVIDENCE_FIELDS
    ).reindex(table.index)
    dtypes = {"matches": "Int64", "inliers": "Int64", "raw_inliers": "Int64", "flipped": "boolean"}
    for column in EVIDENCE_COLUMNS:
        table[column] = evidence[column].astype(dtypes.get(column, "float64"))
    verified = table["matches"].notna()
    logger.info(
        "verified %d pairs of %d queries: %d with ≥ 1 inlier, %d through the flip",
        int(verified.sum()),
        table.loc[verified, "query_id"].nunique(),
        int((table["inliers"] > 0).sum()),
        int(table["flipped"].sum()),
    )
    return table


# --- Inlier correspondences of one pair, for drawing (the gallery) ---------------------------


@dataclass(frozen=True)
class Correspondences:
    """The RANSAC inliers of a verified pair as point pairs, ready to draw.

    Points are in the coordinates of the images SIFT ran on (``SiftFeatures.image_size``).
    ``query_xy`` is always in the *unmirrored* query's coordinates, also when the evidence came
    from the mirrored query (``flipped``), so a caller draws on the query as stored.
    """

    query_xy: np.ndarray  # float32 [n, 2]
    reference_xy: np.ndarray  # float32 [n, 2]
    flipped: bool
    inliers: int  # effective (distinct-position) count, as in PairEvidence.inliers


def _fit_pair(
    query: SiftFeatures, reference: SiftFeatures, params: VerifyParams
) -> tuple[np.ndarray, GeometryFit]:
    """Ratio-test matches and their geometry fit, exactly as :func:`verify_pair` computes them."""
    matches = ratio_test_matches(query.descriptors, reference.descriptors, params.ratio)
    return matches, fit_geometry(query.keypoints, reference.keypoints, matches, params)


def inlier_correspondences(
    query: SiftFeatures,
    reference: SiftFeatures,
    params: VerifyParams,
    query_flipped: SiftFeatures | None = None,
    flipped: bool | None = None,
) -> Correspondences:
    """Inlier point pairs of the fit that :func:`verify_pair` keeps for this pair.

    ``flipped`` is the view the pair's evidence came from (its ``flipped`` column), when it was
    verified: that view is fitted again, whichever views verification matched
    (``flip_vote_ratio``). Otherwise the mirrored query wins on the rule of :func:`verify_pair`
    (strictly more effective inliers). A rejected fit gives no points. Mirrored x is mapped
    back with ``x → width - 1 - x``: OpenCV puts pixel centres on integers, so column ``j`` of
    the mirror is column ``width - 1 - j`` of the query.
    """
    can_flip = params.try_flip and query_flipped is not None
    kept_view = flipped
    flipped = bool(kept_view) and can_flip
    matches, fit = _fit_pair(query_flipped if flipped else query, reference, params)
    if can_flip and kept_view is None:
        mirrored_matches, mirrored_fit = _fit_pair(query_flipped, reference, params)
        if mirrored_fit.inliers > fit.inliers:
            matches, fit, flipped = mirrored_matches, mirrored_fit, True
    kept = matches[fit.inlier_mask] if fit.inliers else matches[:0]
    source = query_flipped if flipped else query
    query_xy = np.asarray(source.keypoints[kept[:, 0], :2], dtype=np.float32)
    if flipped:
        query_xy = query_xy.copy()
        query_xy[:, 0] = source.image_size[0] - 1 - query_xy[:, 0]
    reference_xy = np.asarray(reference.keypoints[kept[:, 1], :2], dtype=np.float32)
    return Correspondences(query_xy, reference_xy, flipped, fit.inliers)
