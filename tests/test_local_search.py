"""Local-descriptor search: exact k-NN, exact merges (sharded == unsharded), votes, candidates."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from script_runner import run_script

import copydetect.local_index
import copydetect.local_search
import copydetect.progress
from copydetect.knn import merge_topk
from copydetect.local_index import (
    LocalIndexParams,
    auto_nlist,
    build_shard_index,
    choose_nlist,
    fit_coarse_index,
    round_pow2,
    write_coarse_index,
    write_shard_index,
)
from copydetect.local_search import (
    VOTE_COLUMNS,
    CandidateParams,
    LocalSearchParams,
    Neighbors,
    QueryLayout,
    VoteParams,
    assign_cells,
    count_votes,
    descriptor_knn,
    merge_neighbors,
    plan_runs,
    read_cells,
    read_neighbors,
    search_group,
    select_candidates,
    stack_query_descriptors,
    vote_mask,
    write_cells,
    write_neighbors,
)
from copydetect.params import defaults
from copydetect.shards import SiftFeatures, read_sift_shard, write_sift_shard

ROOT = Path(__file__).resolve().parents[1]


# --- synthetic SIFT data ------------------------------------------------------------------------


def random_features(rng: np.random.Generator, image_id: str, n: int) -> SiftFeatures:
    keypoints = (rng.random((n, 4)) * 100).astype(np.float32)
    descriptors = rng.integers(0, 256, (n, 128), dtype=np.uint8)
    return SiftFeatures(image_id, keypoints, descriptors, (100, 100))


def noisy_copy(
    rng: np.random.Generator, source: SiftFeatures, image_id: str, keep: float = 0.6
) -> SiftFeatures:
    """A query that shares a subset of ``source``'s descriptors, each shifted by small noise."""
    rows = np.sort(rng.choice(len(source.descriptors), int(keep * len(source.descriptors)), False))
    noise = rng.integers(-3, 4, (len(rows), 128))
    desc = np.clip(source.descriptors[rows].astype(np.int64) + noise, 0, 255).astype(np.uint8)
    return SiftFeatures(image_id, source.keypoints[rows], desc, source.image_size)


def brute_force(query: np.ndarray, ref: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact oracle in int64: squared L2, ties by smaller reference row, (inf, -1) padding."""
    dist = ((query[:, None, :].astype(np.int64) - ref[None, :, :].astype(np.int64)) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(len(ref)), dist.shape), dist), axis=-1)[:, :k]
    d = np.take_along_axis(dist, order, -1).astype(np.float32)
    pad = k - order.shape[1]
    d = np.pad(d, ((0, 0), (0, pad)), constant_values=np.inf)
    i = np.pad(order.astype(np.int64), ((0, 0), (0, pad)), constant_values=-1)
    return d, i


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """30 references in 3 shards (+ the same 30 in one shuffled shard), 12 planted queries.

    ``r16`` is an exact duplicate of ``r05`` (in another shard) so every descriptor copied from
    it ties exactly; ``r09`` and ``q_empty`` have no descriptors; ``q_distractor`` copies nothing.
    """
    rng = np.random.default_rng(7)
    tmp = tmp_path_factory.mktemp("local")
    refs = [random_features(rng, f"r{i:02d}", int(rng.integers(20, 60))) for i in range(30)]
    refs[9] = random_features(rng, "r09", 0)
    refs[16] = SiftFeatures("r16", refs[5].keypoints, refs[5].descriptors, (100, 100))
    shards = [tmp / "ref_a.h5", tmp / "ref_b.h5", tmp / "ref_c.h5"]
    # Shard membership is not id order (like hash sharding), and r05 / r16 are split.
    members = [[r for i, r in enumerate(refs) if i % 3 == s] for s in range(3)]
    for path, feats in zip(shards, members, strict=True):
        write_sift_shard(path, feats[::-1])
    unsharded = tmp / "ref_all.h5"
    write_sift_shard(unsharded, [refs[i] for i in rng.permutation(30)])
    planted = {f"q{i:02d}": f"r{j:02d}" for i, j in enumerate([1, 4, 5, 8, 12, 13, 22, 29])}
    queries = [noisy_copy(rng, refs[int(r[1:])], q) for q, r in planted.items()]
    queries += [random_features(rng, "q_distractor", 40), random_features(rng, "q_empty", 0)]
    query_path = tmp / "queries.h5"
    write_sift_shard(query_path, queries)
    return SimpleNamespace(
        tmp=tmp,
        refs=refs,
        shards=shards,
        unsharded=unsharded,
        queries=query_path,
        planted=planted,
        layout=QueryLayout.from_features(read_sift_shard(query_path)),
    )


def assert_same_neighbors(a: Neighbors, b: Neighbors) -> None:
    assert a.ref_ids == b.ref_ids
    assert a.ref_shards == b.ref_shards
    for name in ("distances", "ref_index", "ref_keypoint"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), name


# --- k-NN ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 4])
def test_descriptor_knn_equals_brute_force_with_ties(k: int) -> None:
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (300, 128), dtype=np.uint8)
    ref[200:210] = ref[10:20]  # exact duplicates: ties must go to the smaller row
    query = np.concatenate([ref[5:25], rng.integers(0, 256, (50, 128), dtype=np.uint8)])
    dist, idx = descriptor_knn(query, ref, LocalSearchParams(k=k))
    want_d, want_i = brute_force(query, ref, k)
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(idx, want_i)
    assert dist.dtype == np.float32 and idx.dtype == np.int64


def test_fewer_reference_descriptors_than_k_are_padded() -> None:
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (2, 128), dtype=np.uint8)
    query = rng.integers(0, 256, (3, 128), dtype=np.uint8)
    dist, idx = descriptor_knn(query, ref, LocalSearchParams(k=5))
    want_d, want_i = brute_force(query, ref, 5)
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(idx, want_i)
    assert np.isinf(dist[:, 2:]).all() and (idx[:, 2:] == -1).all()


def test_empty_query_or_reference() -> None:
    some = np.ones((4, 128), dtype=np.uint8)
    none = np.zeros((0, 128), dtype=np.uint8)
    dist, idx = descriptor_knn(none, some, LocalSearchParams(k=2))
    assert dist.shape == idx.shape == (0, 2)
    dist, idx = descriptor_knn(some, none, LocalSearchParams(k=2))
    assert np.isinf(dist).all() and (idx == -1).all() and idx.shape == (4, 2)


# --- merges -------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_merge_topk_of_a_split_equals_the_whole(k: int) -> None:
    rng = np.random.default_rng(4)
    ref = rng.integers(0, 256, (120, 128), dtype=np.uint8)
    ref[90:100] = ref[0:10]  # cross-part ties
    query = np.concatenate([ref[:10], rng.integers(0, 256, (20, 128), dtype=np.uint8)])
    part = rng.permutation(120) < 60
    rows_a, rows_b = np.flatnonzero(part), np.flatnonzero(~part)
    d_a, i_a = descriptor_knn(query, ref[rows_a], LocalSearchParams(k=k))
    d_b, i_b = descriptor_knn(query, ref[rows_b], LocalSearchParams(k=k))
    # Back to global rows (the global key); missing stays -1.
    g_a, g_b = np.where(i_a >= 0, rows_a[i_a], -1), np.where(i_b >= 0, rows_b[i_b], -1)
    dist, idx, _ = merge_topk(d_a, g_a, d_b, g_b, k)
    want_d, want_i = brute_force(query, ref, k)
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_array_equal(merge_topk(d_b, g_b, d_a, g_a, k)[1], idx)  # symmetric


@pytest.mark.parametrize("k", [1, 3])
def test_sharded_grouped_search_equals_unsharded_bit_for_bit(
    dataset: SimpleNamespace, k: int
) -> None:
    params = LocalSearchParams(k=k)
    whole = search_group(dataset.queries, [dataset.unsharded], params)
    a, b, c = dataset.shards
    # Two groups, written and read back as the workflow does; the group order must not matter.
    files = []
    for name, group in (("g1", [c, a]), ("g0", [b])):
        path = dataset.tmp / f"neighbors_{name}_k{k}.h5"
        write_neighbors(path, search_group(dataset.queries, group, params))
        files.append(path)
    merged = merge_neighbors((read_neighbors(p) for p in files), k)
    assert merged.n == dataset.layout.n_descriptors
    # Unsharded names its one shard differently: compare everything else, then the shards.
    renamed = Neighbors(
        whole.ref_ids, merged.ref_shards, whole.distances, whole.ref_index, whole.ref_keypoint
    )
    assert_same_neighbors(merged, renamed)
    pd.testing.assert_frame_equal(
        count_votes(dataset.layout, merged, VoteParams()).drop(columns="reference_shard"),
        count_votes(dataset.layout, whole, VoteParams()).drop(columns="reference_shard"),
    )
    owner = {r.id: p.stem for p in dataset.shards for r in read_sift_shard(p)}
    assert merged.ref_shards == [owner[r] for r in merged.ref_ids]


def test_exact_duplicate_references_tie_to_the_smaller_id(dataset: SimpleNamespace) -> None:
    params = LocalSearchParams(k=2)
    # r16's shard (ref_b) is searched before r05's (ref_c): the merge, not the order, decides.
    nb = search_group(dataset.queries, dataset.shards, params)
    layout = dataset.layout
    q = layout.ids.index("q02")  # planted copy of r05 == r17
    rows = slice(layout.offsets[q], layout.offsets[q + 1])
    first = [nb.ref_ids[i] for i in nb.ref_index[rows, 0]]
    second = [nb.ref_ids[i] for i in nb.ref_index[rows, 1]]
    assert set(first) == {"r05"} and set(second) == {"r16"}
    np.testing.assert_array_equal(nb.distances[rows, 0], nb.distances[rows, 1])


def test_neighbors_file_roundtrip_is_atomic(tmp_path: Path) -> None:
    nb = Neighbors(
        ["ré", "x"],
        ["s0", "s1"],
        np.array([[0.0, np.inf]], np.float32),
        np.array([[1, -1]], np.int32),
        np.array([[7, -1]], np.int32),
    )
    path = tmp_path / "out" / "n.h5"
    write_neighbors(path, nb)
    assert_same_neighbors(read_neighbors(path), nb)
    assert [p.name for p in path.parent.iterdir()] == ["n.h5"]


def test_merge_neighbors_rejects_mismatched_inputs() -> None:
    def one(ref_id: str, shard: str, n: int = 1) -> Neighbors:
        z = np.zeros((n, 1), np.int32)
        return Neighbors([ref_id], [shard], np.zeros((n, 1), np.float32), z, z)

    with pytest.raises(ValueError, match="disagree"):
        merge_neighbors([one("r", "s"), one("q", "s", n=2)], 1)
    with pytest.raises(ValueError, match="in shards"):
        merge_neighbors([one("r", "s0"), one("r", "s1")], 1)
    with pytest.raises(ValueError, match="at least one"):
        merge_neighbors([], 1)


# --- votes and candidates -----------------------------------------------------------------------


def test_votes_pick_the_planted_reference(dataset: SimpleNamespace) -> None:
    params = LocalSearchParams()
    nb = search_group(dataset.queries, dataset.shards, params)
    votes = count_votes(dataset.layout, nb, VoteParams())
    assert list(votes.columns) == VOTE_COLUMNS
    # The distractor's 40 descriptors still have 1-NNs: a few scattered votes, never 8.
    assert votes[votes.query_id == "q_distractor"].votes.max() < 8
    candidates = select_candidates(votes, candidates_per_query=3, min_votes=8)
    top = candidates.groupby("query_id").head(1).set_index("query_id")["reference_id"]
    assert top.to_dict() == dataset.planted  # the distractor and the empty query get none
    # Random descriptors are ~1100 apart, noisy copies ~30: a distance cap silences distractors.
    capped = count_votes(dataset.layout, nb, VoteParams(max_distance=200.0))
    assert set(capped.query_id) == set(dataset.planted)
    q01 = votes[(votes.query_id == "q01") & (votes.reference_id == "r04")].iloc[0]
    n_q01 = int(np.diff(dataset.layout.offsets)[dataset.layout.ids.index("q01")])
    assert q01.votes == n_q01 and q01.distinct_ref_keypoints == n_q01
    assert q01.reference_shard == "ref_b" and 0 < q01.mean_distance < 40


def test_empty_query_shard(tmp_path: Path, dataset: SimpleNamespace) -> None:
    empty = tmp_path / "empty.h5"
    write_sift_shard(empty, [])
    params = LocalSearchParams(k=2)
    nb = search_group(empty, dataset.shards, params)
    assert nb.distances.shape == (0, 2) and nb.ref_ids == []
    write_neighbors(tmp_path / "n.h5", nb)
    merged = merge_neighbors([read_neighbors(tmp_path / "n.h5")], 2)
    votes = count_votes(QueryLayout.from_features([]), merged, VoteParams())
    assert list(votes.columns) == VOTE_COLUMNS and votes.empty
    assert select_candidates(votes, 5, 1).empty


def test_empty_reference_shards_in_a_group(tmp_path: Path, dataset: SimpleNamespace) -> None:
    empty, blank = tmp_path / "ref_empty.h5", tmp_path / "ref_blank.h5"
    write_sift_shard(empty, [])
    write_sift_shard(blank, [random_features(np.random.default_rng(0), f"z{i}", 0) for i in (1, 2)])
    params = LocalSearchParams(k=2)
    alone = search_group(dataset.queries, [empty, blank], params)
    assert alone.ref_ids == [] and (alone.ref_index == -1).all()
    assert np.isinf(alone.distances).all()
    assert_same_neighbors(
        search_group(dataset.queries, [empty, dataset.shards[0], blank], params),
        search_group(dataset.queries, [dataset.shards[0]], params),
    )
    assert count_votes(dataset.layout, alone, VoteParams()).empty


def test_count_votes_checks_the_row_count(dataset: SimpleNamespace) -> None:
    nb = search_group(dataset.queries, dataset.shards[:1], LocalSearchParams())
    layout = QueryLayout(dataset.layout.ids[:1], dataset.layout.offsets[:2])
    with pytest.raises(ValueError, match="descriptors"):
        count_votes(layout, nb, VoteParams())


def test_vote_filters_max_distance_and_distinct_reference_ratio() -> None:
    nb = Neighbors(
        ["a", "b"],
        ["s", "s"],
        np.array([[4, 9], [4, 5], [100, 400], [1, 2], [0, np.inf]], np.float32),  # squared
        np.array([[0, 0], [0, 1], [1, 0], [0, 1], [1, -1]], np.int32),
        np.zeros((5, 2), np.int32),
    )
    assert vote_mask(nb, VoteParams()).tolist() == [True] * 5
    assert vote_mask(nb, VoteParams(max_distance=3.0)).tolist() == [
        True,
        True,
        False,
        True,
        True,
    ]
    # L2 ratios: row 0 both neighbours in "a" (passes), row 1 2/√5 = 0.89, row 2 10/20,
    # row 3 1/√2 = 0.71, row 4 nothing else kept (passes).
    assert vote_mask(nb, VoteParams(ratio=0.8)).tolist() == [
        True,
        False,
        True,
        True,
        True,
    ]
    assert vote_mask(nb, VoteParams(ratio=0.6)).tolist() == [
        True,
        False,
        True,
        False,
        True,
    ]


def test_candidates_order_ties_and_min_votes() -> None:
    rows = [
        ("q1", "r3", "s", 5, 4, 10.0),
        ("q1", "r1", "s", 5, 4, 10.0),  # full tie with r3: smaller id first
        ("q1", "r2", "s", 5, 5, 30.0),  # more distinct keypoints beats distance
        ("q1", "r4", "s", 5, 4, 5.0),  # same votes and keypoints, closer
        ("q1", "r5", "s", 9, 1, 90.0),  # most votes first
        ("q1", "r6", "s", 1, 1, 1.0),  # below min_votes
        ("q0", "r9", "s", 2, 2, 1.0),
        ("q2", "r1", "s", 1, 1, 1.0),  # only weak votes: no candidate
    ]
    votes = pd.DataFrame(rows, columns=VOTE_COLUMNS)
    got = select_candidates(votes, candidates_per_query=4, min_votes=2)
    assert list(zip(got.query_id, got.reference_id, strict=True)) == [
        ("q0", "r9"),
        ("q1", "r5"),
        ("q1", "r2"),
        ("q1", "r4"),
        ("q1", "r1"),
    ]
    assert list(got.columns) == VOTE_COLUMNS


# --- parameters and rule scripts ----------------------------------------------------------------


def test_params_accept_the_config_sections_and_reject_unknown_keys() -> None:
    local = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["local"]
    assert LocalSearchParams.from_mapping(local["search"]).k >= 1
    assert VoteParams.from_mapping(local["votes"]).ratio is None
    assert CandidateParams.from_mapping(local["candidates"]).min_votes >= 1
    with pytest.raises(ValueError, match="unknown local.search parameters"):
        LocalSearchParams.from_mapping({"kk": 1})
    with pytest.raises(ValueError, match="unknown local.votes parameters"):
        VoteParams.from_mapping({"k": 1})
    with pytest.raises(ValueError, match="local.votes.ratio"):
        VoteParams(ratio=1.5)


def test_rule_scripts_end_to_end(
    tmp_path: Path, dataset: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(copydetect.progress, "PROGRESS_EVERY_S", 0.0)  # a line per query block
    search = {"k": 1, "nprobe": 4, "use_gpu": "never"}
    neighbor_files = []
    for name, group in (("g0", dataset.shards[:2]), ("g1", dataset.shards[2:])):
        out = tmp_path / "search" / f"{name}.h5"
        run_script(
            "local_search_block.py",
            SimpleNamespace(
                input=SimpleNamespace(
                    queries=str(dataset.queries), references=list(map(str, group)), cells=[]
                ),
                output=SimpleNamespace(neighbors=str(out)),
                params=SimpleNamespace(search=search, gpu_lock_dir=str(tmp_path / "locks")),
                resources={"gpu": 0},
                log=[str(tmp_path / f"search_{name}.log")],
                threads=1,
            ),
        )
        neighbor_files.append(str(out))
    log = (tmp_path / "search_g0.log").read_text()
    assert "peak RSS" in log
    n = dataset.layout.n_descriptors  # one query block per reference shard, two shards
    assert f"{n:,} / {2 * n:,} query descriptors × reference shards (50.0 %), " in log
    assert f"{2 * n:,} / {2 * n:,} query descriptors × reference shards (100.0 %) done" in log
    run_script(
        "local_candidates.py",
        SimpleNamespace(
            input=SimpleNamespace(queries=str(dataset.queries), neighbors=neighbor_files),
            output=SimpleNamespace(
                votes=str(tmp_path / "votes.csv"), candidates=str(tmp_path / "cand.csv")
            ),
            params=SimpleNamespace(
                search=search,
                votes={"max_distance": None},
                candidates={"candidates_per_query": 2, "min_votes": 8},
            ),
            log=[str(tmp_path / "cand.log")],
            threads=1,
        ),
    )
    candidates = pd.read_csv(tmp_path / "cand.csv")
    assert list(candidates.columns) == VOTE_COLUMNS
    top = candidates.groupby("query_id").head(1).set_index("query_id")["reference_id"]
    assert top.to_dict() == dataset.planted
    assert len(pd.read_csv(tmp_path / "votes.csv")) >= len(candidates)


# --- the inverted file (local.index.type: ivf) --------------------------------------------------


def fit_coarse(tmp: Path, name: str, nlist: int, seed: int = 0) -> Path:
    """A coarse index fitted on descriptors unrelated to the references (a training set)."""
    rng = np.random.default_rng(100 + seed)
    sample = rng.integers(0, 256, (nlist * 40, 128), dtype=np.uint8)
    params = LocalIndexParams(nlist=nlist, seed=seed)
    path = tmp / f"{name}.faiss"
    write_coarse_index(path, fit_coarse_index(sample, nlist, params))
    return path


def index_shards(tmp: Path, coarse: Path, shards: list[Path]) -> list[Path]:
    paths = []
    for shard in shards:
        path = tmp / f"{coarse.stem}_idx" / f"{shard.stem}.h5"
        write_shard_index(path, build_shard_index(coarse, shard))
        paths.append(path)
    return paths


@pytest.mark.parametrize(("k", "nprobe"), [(1, 2), (3, 3)])
def test_ivf_sharded_equals_unsharded_bit_for_bit(
    dataset: SimpleNamespace, k: int, nprobe: int
) -> None:
    """One coarse quantizer for every shard: each query descriptor scans the same cells in each,
    so the merged top-k equals the top-k of one index over all references, even with few
    cells scanned (approximate)."""
    coarse = fit_coarse(dataset.tmp, f"coarse_k{k}", nlist=8)
    params = LocalSearchParams(k=k, nprobe=nprobe)
    (whole_index,) = index_shards(dataset.tmp, coarse, [dataset.unsharded])
    a, b, c = index_shards(dataset.tmp, coarse, dataset.shards)
    whole = search_group(dataset.queries, [whole_index], params, coarse)
    merged = merge_neighbors(
        [
            search_group(dataset.queries, [c, a], params, coarse),
            search_group(dataset.queries, [b], params, coarse),
        ],
        k,
    )
    renamed = Neighbors(
        whole.ref_ids, merged.ref_shards, whole.distances, whole.ref_index, whole.ref_keypoint
    )
    assert_same_neighbors(merged, renamed)
    assert merged.ref_shards == [
        {r.id: p.stem for p in dataset.shards for r in read_sift_shard(p)}[r]
        for r in merged.ref_ids
    ]


@pytest.mark.parametrize(("k", "budget"), [(1, 10**9), (3, 10**9), (1, 700), (3, 1)])
def test_ivf_merged_runs_equal_shard_by_shard_and_unsharded(
    dataset: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, k: int, budget: int
) -> None:
    """Searching a group's shards merged into runs (whatever the run budget) gives the same
    bytes as one index over all references, although the shards' ids interleave (hash
    sharding): ties within a run break by the rows' global keys, as unsharded."""
    coarse = fit_coarse(dataset.tmp, f"coarse_runs_k{k}_{budget}", nlist=8, seed=3)
    (whole_index,) = index_shards(dataset.tmp, coarse, [dataset.unsharded])
    shards = index_shards(dataset.tmp, coarse, dataset.shards)
    params = LocalSearchParams(k=k, nprobe=3)
    whole = search_group(dataset.queries, [whole_index], params, coarse)
    monkeypatch.setattr(copydetect.local_search, "RUN_DESCRIPTORS", budget)
    a, b, c = shards  # b holds r16, c its duplicate r05: b's rows come first in a run
    runs = search_group(dataset.queries, [b, c, a], params, coarse)
    for name in ("distances", "ref_index", "ref_keypoint"):
        assert getattr(runs, name).tobytes() == getattr(whole, name).tobytes(), name
    assert runs.ref_ids == whole.ref_ids
    # r16 duplicates r05 (another shard, merged in the same run when the budget allows): every
    # such tie goes to r05
    assert "r05" in runs.ref_ids and (k > 1) == ("r16" in runs.ref_ids)


def test_plan_runs_fills_each_run_up_to_the_budget() -> None:
    paths, sizes = ["a", "b", "c", "d"], [4, 4, 9, 0]
    assert plan_runs(paths, sizes, 8) == [["a", "b"], ["c"], ["d"]]  # c alone exceeds it
    assert plan_runs(paths, sizes, 100) == [["a", "b", "c", "d"]]
    assert plan_runs(paths, sizes, 1) == [["a"], ["b"], ["c"], ["d"]]
    assert plan_runs([], [], 8) == []


def test_query_cells_file_equals_assigning_in_the_job(dataset: SimpleNamespace) -> None:
    """assign_local_cells' file gives the search the same cells the job would assign itself;
    cells of another nprobe, query shard or coarse index are refused."""
    coarse = fit_coarse(dataset.tmp, "coarse_cells", nlist=16, seed=4)
    indexes = index_shards(dataset.tmp, coarse, dataset.shards)
    params = LocalSearchParams(k=2, nprobe=4)
    query_desc = stack_query_descriptors(dataset.queries)
    cells = dataset.tmp / "cells.h5"
    write_cells(cells, assign_cells(query_desc, coarse, params.nprobe))
    assert read_cells(cells).cells.shape == (len(query_desc), 4)
    assert_same_neighbors(
        search_group(dataset.queries, indexes, params, cells_path=cells),
        search_group(dataset.queries, indexes, params, coarse),
    )
    with pytest.raises(ValueError, match="nprobe 4, searching with 5"):
        search_group(dataset.queries, indexes, LocalSearchParams(nprobe=5), cells_path=cells)
    short = dataset.tmp / "short_cells.h5"
    write_cells(short, assign_cells(query_desc[:10], coarse, params.nprobe))
    with pytest.raises(ValueError, match="query cells for"):
        search_group(dataset.queries, indexes, params, cells_path=short)
    other = fit_coarse(dataset.tmp, "coarse_cells_other", nlist=16, seed=5)
    foreign = dataset.tmp / "foreign_cells.h5"
    write_cells(foreign, assign_cells(query_desc, other, params.nprobe))
    with pytest.raises(ValueError, match="another coarse index"):
        search_group(dataset.queries, indexes, params, cells_path=foreign)


@pytest.mark.parametrize("large", [False, True])
def test_ivf_scanning_every_cell_equals_the_exact_search(
    dataset: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, large: bool
) -> None:
    """Stored bytes are the descriptors themselves (8bit_direct): distances are the flat index's
    integers and ties break the same way, so nprobe = nlist is the exact search."""
    if large:  # the quantizer and the two-level k-means of a large nlist, on a small one
        monkeypatch.setattr(copydetect.local_index, "HNSW_ABOVE", 2)
        monkeypatch.setattr(copydetect.local_index, "TWO_LEVEL_ABOVE", 2)
    coarse = fit_coarse(dataset.tmp, f"coarse_all_{large}", nlist=8, seed=1)
    indexes = index_shards(dataset.tmp, coarse, dataset.shards)
    params = LocalSearchParams(k=2, nprobe=8)
    assert_same_neighbors(
        search_group(dataset.queries, indexes, params, coarse),
        search_group(dataset.queries, dataset.shards, params),
    )


def test_ivf_votes_pick_the_planted_reference(dataset: SimpleNamespace) -> None:
    coarse = fit_coarse(dataset.tmp, "coarse_votes", nlist=16, seed=2)
    indexes = index_shards(dataset.tmp, coarse, dataset.shards)
    nb = search_group(dataset.queries, indexes, LocalSearchParams(nprobe=2), coarse)
    votes = count_votes(dataset.layout, nb, VoteParams())
    top = select_candidates(votes, 3, 8).groupby("query_id").head(1)
    assert top.set_index("query_id")["reference_id"].to_dict() == dataset.planted


def test_ivf_refuses_shards_of_another_coarse_index(dataset: SimpleNamespace) -> None:
    one = fit_coarse(dataset.tmp, "coarse_one", nlist=4, seed=3)
    other = fit_coarse(dataset.tmp, "coarse_other", nlist=4, seed=4)
    indexes = index_shards(dataset.tmp, one, dataset.shards[:1])
    with pytest.raises(ValueError, match="another coarse index"):
        search_group(dataset.queries, indexes, LocalSearchParams(), other)


def test_coarse_fit_is_deterministic(tmp_path: Path) -> None:
    a, b = fit_coarse(tmp_path, "a", nlist=8), fit_coarse(tmp_path, "b", nlist=8)
    assert a.read_bytes() == b.read_bytes()
    assert fit_coarse(tmp_path, "c", nlist=8, seed=1).read_bytes() != a.read_bytes()


def test_nlist_follows_the_collection_and_the_training_set(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert [round_pow2(x) for x in (0, 1, 2.9, 3.0, 5.9, 6.0, 1500)] == [1, 1, 4, 4, 8, 8, 2048]
    assert auto_nlist(100_000, 240, 1000) == 32_768  # 24M descriptors / 1000 = 24k -> 2^15
    assert auto_nlist(10_000, 240, 1000) == 2048
    params = LocalIndexParams(nlist="auto", list_length=1000, max_training_descriptors=2 * 10**6)
    # 200 training images of 300 descriptors; 8192 references of about as many.
    assert choose_nlist(params, 8192, 200, 60_000) == 1024  # 2.46M / 1000 = 2458 -> 2048, capped
    assert "fit 1024 cells, not 2048" in caplog.text
    assert choose_nlist(LocalIndexParams(nlist=64), 8192, 200, 60_000) == 64
    assert choose_nlist(LocalIndexParams(nlist=64), 1, 1, 10) == 1


def test_ivf_rule_scripts(tmp_path: Path, dataset: SimpleNamespace) -> None:
    """fit_local_index -> index_local_shard -> local_search_block, as the workflow runs them."""
    training = tmp_path / "training.h5"
    rng = np.random.default_rng(5)
    write_sift_shard(training, [random_features(rng, f"t{i}", 100) for i in range(20)])
    index = {**defaults("local.index"), "nlist": "auto", "list_length": 100}
    coarse = tmp_path / "models" / "coarse.faiss"
    run_script(
        "fit_local_index.py",
        SimpleNamespace(
            input=SimpleNamespace(features=[str(training)]),
            output=SimpleNamespace(index=str(coarse)),
            params=SimpleNamespace(index=index, reference_images=32),
            log=[str(tmp_path / "fit.log")],
        ),
    )
    assert "32 cells for ~32 references" in (tmp_path / "fit.log").read_text()  # 32×100/100
    shard_indexes = []
    for shard in dataset.shards:
        out = tmp_path / "index" / f"{shard.stem}.h5"
        run_script(
            "index_local_shard.py",
            SimpleNamespace(
                input=SimpleNamespace(features=str(shard), coarse=str(coarse)),
                output=SimpleNamespace(index=str(out)),
                log=[str(tmp_path / f"index_{shard.stem}.log")],
            ),
        )
        shard_indexes.append(str(out))
    search = {"k": 1, "nprobe": 32, "use_gpu": "never"}
    cells = tmp_path / "cells.h5"
    run_script(
        "assign_local_cells.py",
        SimpleNamespace(
            input=SimpleNamespace(queries=str(dataset.queries), coarse=str(coarse)),
            output=SimpleNamespace(cells=str(cells)),
            params=SimpleNamespace(search=search),
            log=[str(tmp_path / "cells.log")],
        ),
    )
    assert "32 of 32 cells each" in (tmp_path / "cells.log").read_text()
    out = tmp_path / "neighbors.h5"
    run_script(
        "local_search_block.py",
        SimpleNamespace(
            input=SimpleNamespace(
                queries=str(dataset.queries), references=shard_indexes, cells=[str(cells)]
            ),
            output=SimpleNamespace(neighbors=str(out)),
            params=SimpleNamespace(search=search, gpu_lock_dir=str(tmp_path / "locks")),
            log=[str(tmp_path / "search.log")],
        ),
    )
    assert "ivf: 32 cells, 32 scanned" in (tmp_path / "search.log").read_text()
    exact = search_group(dataset.queries, dataset.shards, LocalSearchParams())
    assert_same_neighbors(read_neighbors(out), exact)  # every cell scanned: exact


def test_featureless_training_set_gives_one_cell(dataset: SimpleNamespace, tmp_path: Path) -> None:
    """No training descriptors at all (flat images): one cell, i.e. the exact scan."""
    params = LocalIndexParams()
    nlist = choose_nlist(params, 64, 10, 0)
    assert nlist == 1
    coarse = tmp_path / "coarse.faiss"
    write_coarse_index(coarse, fit_coarse_index(np.zeros((0, 128), np.uint8), nlist, params))
    indexes = index_shards(tmp_path, coarse, dataset.shards)
    assert_same_neighbors(
        search_group(dataset.queries, indexes, LocalSearchParams(), coarse),
        search_group(dataset.queries, dataset.shards, LocalSearchParams()),
    )


@pytest.mark.parametrize("hnsw", [False, True])
def test_ivf_results_do_not_depend_on_the_thread_count(
    dataset: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, hnsw: bool
) -> None:
    """A SLURM node and a laptop must write the same bytes: the fit and the HNSW graph are
    built on one thread, and each query descriptor's search is independent of the others."""
    import faiss

    if hnsw:
        monkeypatch.setattr(copydetect.local_index, "HNSW_ABOVE", 2)
        monkeypatch.setattr(copydetect.local_index, "TWO_LEVEL_ABOVE", 2)
    before = faiss.omp_get_max_threads()
    results = []
    try:
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            tmp = dataset.tmp / f"threads_{hnsw}_{threads}"
            tmp.mkdir()
            coarse = fit_coarse(tmp, "coarse", nlist=8, seed=5)
            indexes = index_shards(tmp, coarse, dataset.shards)
            nb = search_group(dataset.queries, indexes, LocalSearchParams(k=2, nprobe=2), coarse)
            results.append((coarse.read_bytes(), [p.read_bytes() for p in indexes], nb))
    finally:
        faiss.omp_set_num_threads(before)
    (coarse_1, shards_1, nb_1), (coarse_2, shards_2, nb_2) = results
    assert coarse_1 == coarse_2 and shards_1 == shards_2
    assert_same_neighbors(nb_1, nb_2)


def test_two_level_kmeans_gives_every_cell_and_cuts_the_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(copydetect.local_index, "TWO_LEVEL_ABOVE", 4)
    monkeypatch.setattr(copydetect.local_index, "MAX_CELL_POINTS", 50)
    rng = np.random.default_rng(8)
    sample = rng.integers(0, 256, (5000, 128), dtype=np.uint8)
    index = fit_coarse_index(sample, 64, LocalIndexParams(nlist=64))
    assert index.nlist == index.quantizer.ntotal == 64  # 8 clusters × their shares
    assert len(copydetect.local_index._training_points(sample, 64, 0)) == 64 * 50
