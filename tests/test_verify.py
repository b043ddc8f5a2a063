"""Pair verification: ratio test, RANSAC with degenerate-fit rejection, flips, candidate tables."""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import pandas as pd
import pytest
import skimage.data
from image_helpers import edited_copy, jpeg_bytes

import copydetect.progress
from copydetect.shards import ImageRecord, SiftFeatures, write_image_shard
from copydetect.sift import SiftParams, extract_sift, flipped_features, sift_shard
from copydetect.tables import read_table
from copydetect.verify import (
    VerifyParams,
    _verify_one,
    count_distinct,
    fit_geometry,
    pairs_to_verify,
    ratio_test_matches,
    ratio_test_views,
    stack_views,
    verify_candidates,
    verify_pair,
    verify_stacked,
    views_to_match,
)

SIFT = SiftParams()
VERIFY = VerifyParams()


def features(keypoints: np.ndarray, descriptors: np.ndarray, image_id: str = "x") -> SiftFeatures:
    """Hand-made features: positions ``[n, 2]`` padded to x, y, size, angle."""
    kp = np.zeros((len(keypoints), 4), np.float32)
    kp[:, :2] = keypoints
    return SiftFeatures(image_id, kp, descriptors.astype(np.uint8), (300, 300))


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "rocket": skimage.data.rocket(),
    }


@pytest.fixture(scope="module")
def reference(photos) -> SiftFeatures:
    return extract_sift(photos["astronaut"], SIFT, "R_astronaut")


def test_edited_copy_verifies_and_unrelated_does_not(photos, reference) -> None:
    copy = extract_sift(edited_copy(photos["astronaut"]), SIFT, "Q")
    evidence = verify_pair(copy, reference, VERIFY)
    assert evidence.inliers >= 20 and not evidence.flipped
    # The fit recovers the edit: the copy was scaled by 0.7 (× 300/512 vs 300/~430 shrink).
    assert 0.6 < evidence.scale < 1.1
    for name in ("coffee", "rocket"):
        unrelated = extract_sift(photos[name], SIFT, name)
        assert verify_pair(unrelated, reference, VERIFY).inliers <= 5


@pytest.mark.parametrize("method", ["affine", "homography"])
def test_the_other_methods_also_verify(photos, reference, method) -> None:
    copy = extract_sift(edited_copy(photos["astronaut"]), SIFT, "Q")
    evidence = verify_pair(copy, reference, VerifyParams(method=method))
    assert evidence.inliers >= 20
    unrelated = extract_sift(photos["coffee"], SIFT, "coffee")
    assert verify_pair(unrelated, reference, VerifyParams(method=method)).inliers <= 5


def test_mirrored_copy_verifies_only_through_the_flip(photos, reference) -> None:
    mirrored = np.ascontiguousarray(edited_copy(photos["astronaut"], angle=-10)[:, ::-1])
    query = extract_sift(mirrored, SIFT, "Q")
    without = verify_pair(query, reference, VERIFY)
    with_flip = verify_pair(query, reference, VERIFY, flipped_features(mirrored, SIFT, "Q"))
    assert without.inliers < 10
    assert with_flip.flipped and with_flip.inliers >= 20
    off = VerifyParams(try_flip=False)
    assert verify_pair(query, reference, off, flipped_features(mirrored, SIFT)) == without


def brute_force_ratio_test(q: np.ndarray, r: np.ndarray, ratio: float) -> np.ndarray:
    """The ratio test in float64 on explicit differences (no product trick, no stacking)."""
    d2 = ((q[:, None, :].astype(np.float64) - r[None, :, :]) ** 2).sum(axis=2)
    order = np.argsort(d2, axis=1, kind="stable")
    rows = np.arange(len(q))
    first, second = d2[rows, order[:, 0]], d2[rows, order[:, 1]]
    keep = first < np.float32(ratio * ratio) * second
    return np.stack([rows[keep], order[keep, 0]], axis=1)


def test_stacked_views_match_each_view_alone_exactly(photos, reference) -> None:
    copy = extract_sift(edited_copy(photos["astronaut"]), SIFT, "Q")
    mirror = flipped_features(edited_copy(photos["astronaut"]), SIFT, "Q")
    empty = np.zeros((0, 128), np.uint8)
    views = [copy.descriptors, empty, mirror.descriptors]
    stacked = ratio_test_views(views, reference.descriptors, VERIFY.ratio)
    for view, matches in zip(views, stacked, strict=True):
        expected = brute_force_ratio_test(view, reference.descriptors, VERIFY.ratio)
        np.testing.assert_array_equal(matches, expected)
        assert matches.dtype == np.int64 and matches.shape[1] == 2
    assert len(stacked[0]) >= 20 and len(stacked[1]) == 0


def test_skipping_a_mirror_that_cannot_win_gives_the_same_evidence(photos, reference) -> None:
    """verify_pair skips the mirror's RANSAC when it has no more matches than the query has
    inliers; the result must equal fitting both views and keeping the better one."""
    cases = [
        edited_copy(photos["astronaut"]),  # the query wins, the mirror is skipped
        np.ascontiguousarray(edited_copy(photos["astronaut"], angle=-10)[:, ::-1]),  # mirror wins
        photos["coffee"],  # neither fits
    ]
    for image in cases:
        query = extract_sift(image, SIFT, "Q")
        mirror = flipped_features(image, SIFT, "Q")
        plain = _verify_one(query, reference, VERIFY, flipped=False)
        flipped = _verify_one(mirror, reference, VERIFY, flipped=True)
        expected = flipped if flipped.inliers > plain.inliers else plain
        assert verify_pair(query, reference, VERIFY, mirror) == expected


def test_one_view_matching_gives_that_views_evidence(photos, reference) -> None:
    """verify_stacked restricted to one view (flip_vote_ratio) equals verifying that view alone:
    a mirrored copy verifies through the mirror, and not at all through the query."""
    image = np.ascontiguousarray(edited_copy(photos["astronaut"], angle=-10)[:, ::-1])
    query, mirror = extract_sift(image, SIFT, "Q"), flipped_features(image, SIFT, "Q")
    views = stack_views([query.descriptors, mirror.descriptors])
    through_mirror = verify_stacked(query, mirror, views, reference, VERIFY, "mirror")
    assert through_mirror == _verify_one(mirror, reference, VERIFY, flipped=True)
    assert through_mirror.flipped and through_mirror.inliers >= 20
    through_query = verify_stacked(query, mirror, views, reference, VERIFY, "query")
    assert through_query == _verify_one(query, reference, VERIFY, flipped=False)
    assert through_query.inliers < 10
    both = verify_stacked(query, mirror, views, reference, VERIFY)
    assert both == verify_pair(query, reference, VERIFY, mirror) == through_mirror


def test_views_follow_the_local_votes() -> None:
    table = pd.DataFrame(
        {
            "local_votes": [5, np.nan, 3, np.nan, 4, 33, 5],
            "local_mirrored_votes": [2, 7, np.nan, np.nan, 4, 34, 3],
        }
    )
    # flip_vote_ratio 2 (the default): one view when it has at least twice the other's votes.
    expected = ["query", "mirror", "query", "both", "both", "both", "both"]
    assert views_to_match(table, VERIFY) == expected
    assert views_to_match(table, VerifyParams(flip_vote_ratio=1.5))[-1] == "query"
    assert views_to_match(table, VerifyParams(flip_vote_ratio=None)) == ["both"] * 7
    assert views_to_match(table, VerifyParams(try_flip=False)) == ["both"] * 7
    # Without the mirror's votes (local crops, no mirrored search) both views are matched.
    assert views_to_match(table[["local_votes"]], VERIFY) == ["both"] * 7


def test_verification_is_reproducible(photos, reference) -> None:
    copy = extract_sift(edited_copy(photos["astronaut"], angle=30), SIFT, "Q")
    assert verify_pair(copy, reference, VERIFY) == verify_pair(copy, reference, VERIFY)


def test_ratio_test_handles_tiny_reference_sets() -> None:
    rng = np.random.default_rng(0)
    q = rng.integers(0, 255, (5, 128)).astype(np.uint8)
    for n in (0, 1):
        assert ratio_test_matches(q, q[:n], 0.8).shape == (0, 2)
    assert ratio_test_matches(q[:0], q, 0.8).shape == (0, 2)
    # Every descriptor is its own nearest neighbour, far closer than any other.
    np.testing.assert_array_equal(ratio_test_matches(q, q, 0.8), np.stack([np.arange(5)] * 2, 1))


def test_matches_onto_one_reference_keypoint_count_once() -> None:
    """A repeated pattern: 30 query keypoints all match the same reference keypoint."""
    rng = np.random.default_rng(1)
    pattern = rng.integers(0, 255, 128)
    others = rng.integers(0, 255, (20, 128))
    ref = features(rng.uniform(50, 250, (21, 2)), np.vstack([pattern, others]))
    # Query keypoints within 3 px of each other: a shift maps all of them within RANSAC's
    # threshold of the single reference keypoint, so RANSAC alone counts 30 inliers.
    query_xy = 100 + rng.uniform(0, 3, (30, 2))
    query = features(query_xy, np.tile(pattern, (30, 1)))
    matches = ratio_test_matches(query.descriptors, ref.descriptors, 0.8)
    assert len(matches) == 30 and (matches[:, 1] == 0).all()
    similarity = VerifyParams(method="partial_affine")
    fit = fit_geometry(query.keypoints, ref.keypoints, matches, similarity)
    assert fit.raw_inliers == 30 and fit.inliers <= 1
    # An affine map has no shift-only fit to offer here: OpenCV finds none at all.
    assert fit_geometry(query.keypoints, ref.keypoints, matches, VERIFY).inliers <= 1


def test_exact_similarity_is_recovered_and_scale_bounds_apply() -> None:
    rng = np.random.default_rng(2)
    q_xy = rng.uniform(0, 300, (40, 2)).astype(np.float32)
    matches = np.stack([np.arange(40)] * 2, axis=1)
    for scale, accepted in ((0.5, True), (2.0, True), (0.05, False), (20.0, False)):
        angle = math.radians(20)
        rot = scale * np.array(
            [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
        )
        r_xy = q_xy @ rot.T + [10.0, -5.0]
        fit = fit_geometry(
            features(q_xy, np.zeros((40, 128))).keypoints,
            features(r_xy, np.zeros((40, 128))).keypoints,
            matches,
            VERIFY,
        )
        if accepted:
            assert fit.inliers == 40 and fit.scale == pytest.approx(scale, rel=1e-3)
        else:
            assert fit.inliers == 0 and math.isnan(fit.scale) and not fit.inlier_mask.any()


def test_affine_method_fits_a_stretch_that_a_similarity_cannot() -> None:
    # An aspect-ratio change (x × 1.8) with a shear: partial_affine keeps only the points near
    # its best compromise, affine all of them; a stretch past max_anisotropy is degenerate.
    rng = np.random.default_rng(3)
    q_xy = rng.uniform(0, 300, (60, 2)).astype(np.float32)
    matches = np.stack([np.arange(60)] * 2, axis=1)
    q_kp = features(q_xy, np.zeros((60, 128))).keypoints

    def fit(linear, method):
        r_kp = features(q_xy @ np.array(linear).T + [5.0, 7.0], np.zeros((60, 128))).keypoints
        return fit_geometry(q_kp, r_kp, matches, VerifyParams(method=method))

    aspect = [[1.8, 0.3], [0.0, 1.0]]
    assert fit(aspect, "affine").inliers == 60
    assert fit(aspect, "affine").scale == pytest.approx(math.sqrt(1.8), rel=1e-3)
    assert fit(aspect, "partial_affine").inliers < 30
    flattened = [[5.0, 0.0], [0.0, 0.5]]
    assert fit(flattened, "affine").inliers == 0
    # similarity_or_affine keeps the affine fit only when it adds more than affine_margin.
    assert fit(aspect, "similarity_or_affine").inliers == 60
    rotation = [[0.8, -0.6], [0.6, 0.8]]
    kept, similarity = fit(rotation, "similarity_or_affine"), fit(rotation, "partial_affine")
    assert kept.inliers == similarity.inliers == 60
    np.testing.assert_array_equal(kept.matrix, similarity.matrix)


def test_too_few_matches_are_not_fitted() -> None:
    q = features(np.array([[0, 0], [10, 0], [0, 10]], np.float32), np.zeros((3, 128)))
    fit = fit_geometry(q.keypoints, q.keypoints, np.stack([np.arange(3)] * 2, 1), VERIFY)
    assert fit.inliers == 0 and fit.matrix is None


@pytest.fixture(scope="module")
def shards(tmp_path_factory, photos) -> dict:
    """A query shard (2 copies + 1 mirrored copy) and two reference shards."""
    root = tmp_path_factory.mktemp("verify")
    queries = {
        "Q1": edited_copy(photos["astronaut"]),
        "Q2": edited_copy(photos["coffee"], angle=-20),
        "Q3": np.ascontiguousarray(edited_copy(photos["rocket"], angle=5)[:, ::-1]),
    }
    sets = {
        "queries": queries,
        "s0000": {"R1": photos["astronaut"], "R2": photos["coffee"]},
        "s0001": {"R3": photos["rocket"], "R4": skimage.data.chelsea()},
    }
    for name, images in sets.items():
        records = [ImageRecord(i, jpeg_bytes(rgb), rgb.shape[1::-1]) for i, rgb in images.items()]
        write_image_shard(root / f"images_{name}.h5", records)
        sift_shard(root / f"images_{name}.h5", root / f"{name}.h5", SIFT)
    sift_shard(root / "images_queries.h5", root / "queries_mirrored.h5", SIFT, mirrored=True)
    return {"root": root, "references": {s: root / f"{s}.h5" for s in ("s0000", "s0001")}}


def candidate_table() -> pd.DataFrame:
    pairs = [(q, r) for q in ("Q3", "Q1", "Q2") for r in ("R4", "R1", "R2", "R3")]
    shard = {"R1": "s0000", "R2": "s0000", "R3": "s0001", "R4": "s0001"}
    return pd.DataFrame(
        {
            "query_id": [q for q, _ in pairs],
            "reference_id": [r for _, r in pairs],
            "reference_shard": [shard[r] for _, r in pairs],
            "local_votes": np.arange(len(pairs)),
        }
    )


def test_verify_candidates_is_independent_of_processes(shards, caplog, monkeypatch) -> None:
    monkeypatch.setattr(copydetect.progress, "PROGRESS_EVERY_S", 0.0)  # a line per query
    root = shards["root"]
    args = (root / "queries.h5", root / "queries_mirrored.h5", shards["references"], VERIFY)
    one = verify_candidates(candidate_table(), *args, processes=1)
    threads = cv2.getNumThreads()
    try:
        # Regression: forked workers hung when the parent's OpenCV thread pool was running.
        cv2.setNumThreads(4)
        cv2.resize(np.zeros((2000, 2000), np.uint8), (500, 500), interpolation=cv2.INTER_AREA)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="copydetect.verify"):
            two = verify_candidates(candidate_table(), *args, processes=2)
    finally:
        cv2.setNumThreads(threads)
    pd.testing.assert_frame_equal(one, two)
    # The parent counts each query's 4 pairs as its worker's results come back.
    progress = [m.split(" (")[0] for m in caplog.messages if "candidate pairs verified" in m]
    assert progress == [f"{n} / 12 candidate pairs verified" for n in (4, 8, 12, 12)]

    assert list(one["query_id"]) == sorted(one["query_id"])
    assert "local_votes" in one.columns and len(one) == 12
    best = one.loc[one.groupby("query_id")["inliers"].idxmax()]
    assert dict(zip(best["query_id"], best["reference_id"], strict=True)) == {
        "Q1": "R1",
        "Q2": "R2",
        "Q3": "R3",
    }
    assert (best["inliers"] >= 20).all()
    assert best.set_index("query_id")["flipped"].to_dict() == {"Q1": False, "Q2": False, "Q3": True}


def test_verify_candidates_round_trips_through_csv(shards, tmp_path) -> None:
    root = shards["root"]
    pairs = verify_candidates(
        candidate_table().head(3),
        root / "queries.h5",
        None,  # no mirrored shard: not read without try_flip
        shards["references"],
        VerifyParams(try_flip=False),
    )
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    assert ",True," not in (tmp_path / "pairs.csv").read_text()  # no flip without try_flip
    pd.testing.assert_frame_equal(read_table(tmp_path / "pairs.csv"), pairs, check_dtype=False)


def test_pairs_only_global_models_ranked_low_are_not_verified(shards, tmp_path) -> None:
    # Q1's pairs: R1 and R2 from the local search, R3 only from vlad (rank 1), R4 only from
    # vlad (rank 2): R4 keeps its global columns and gets no local evidence (empty, not 0).
    table = candidate_table()
    table = table[table["query_id"] == "Q1"].reset_index(drop=True)
    table["local_votes"] = [np.nan, 5, 3, np.nan]  # R4, R1, R2, R3
    table["vlad_rank"] = [2, np.nan, 4, 1]
    assert pairs_to_verify(table, 1).tolist() == [False, True, True, True]
    assert pairs_to_verify(table, 0).tolist() == [False, True, True, False]
    assert pairs_to_verify(table, 2).all()
    root = shards["root"]
    pairs = verify_candidates(
        table, root / "queries.h5", root / "queries_mirrored.h5", shards["references"], VERIFY
    ).set_index("reference_id")
    assert pairs["matches"].isna().tolist() == [False, False, False, True]  # R1, R2, R3, R4
    assert pairs.loc["R1", "inliers"] >= 20 and pairs.loc["R4", "vlad_rank"] == 2
    pairs.to_csv(tmp_path / "pairs.csv")
    rows = (tmp_path / "pairs.csv").read_text().splitlines()
    assert rows[-1] == "R4,Q1,s0001,,2.0,,,,,,,"  # every evidence field empty
    assert rows[1].split(",")[5].isdigit()  # R1's matches: an integer, not 12.0


def test_verify_candidates_matches_the_view_the_local_search_voted_for(shards) -> None:
    # Q3 is a mirrored copy of R3: voted through the mirror it verifies flipped; voted through
    # the query only, its mirror is not matched and the evidence stays weak and unflipped.
    root = shards["root"]
    args = (root / "queries.h5", root / "queries_mirrored.h5", shards["references"])
    table = candidate_table()
    table = table[table["query_id"] == "Q3"].reset_index(drop=True)
    table["local_votes"] = [1, 1, 1, 1]
    for mirrored_votes, flipped, strong in ((9, True, True), (0, False, False), (1, True, True)):
        table["local_mirrored_votes"] = mirrored_votes
        pairs = verify_candidates(table, *args, VERIFY).set_index("reference_id")
        assert bool(pairs.loc["R3", "flipped"]) is flipped
        assert bool(pairs.loc["R3", "inliers"] >= 20) is strong
    everything = verify_candidates(table, *args, VerifyParams(flip_vote_ratio=None))
    table["local_mirrored_votes"] = 1  # a tie: both views, as without flip_vote_ratio
    pd.testing.assert_frame_equal(
        verify_candidates(table, *args, VERIFY).drop(columns="local_mirrored_votes"),
        everything.drop(columns="local_mirrored_votes"),
    )


def test_verify_candidates_needs_the_mirrored_shard_to_try_flips(shards) -> None:
    root = shards["root"]
    with pytest.raises(ValueError, match="mirrored"):
        verify_candidates(
            candidate_table(), root / "queries.h5", None, shards["references"], VERIFY
        )


def test_read_table_keeps_ids_as_text(tmp_path) -> None:
    (tmp_path / "c.csv").write_text("query_id,reference_id,reference_shard,votes\nNA,000123,s1,\n")
    table = read_table(tmp_path / "c.csv")
    assert table.loc[0, "query_id"] == "NA" and table.loc[0, "reference_id"] == "000123"
    assert math.isnan(table.loc[0, "votes"])


def test_count_distinct_counts_grid_cells_like_unique_rows() -> None:
    """The packed int64 cell key counts what np.unique on (x, y) cell rows counts, negative
    coordinates and cells sharing an x or a y included."""
    rng = np.random.default_rng(3)
    points = np.vstack([rng.uniform(-20, 300, (200, 2)), [[5.2, 7.9], [5.8, 7.1], [7.1, 5.2]]])
    for tolerance in (0.5, 1.0, 8.0):
        cells = np.floor(points / tolerance).astype(np.int64)
        assert count_distinct(points, tolerance) == len(np.unique(cells, axis=0))
    assert count_distinct(np.zeros((0, 2)), 1.0) == 0
