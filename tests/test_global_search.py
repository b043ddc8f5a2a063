"""Global search: normalization fit, exact sharded k-NN, score normalization, αQE, candidates."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np
import pandas as pd
import pytest
from script_runner import run_script

from copydetect import global_search
from copydetect.global_search import (
    CANDIDATE_COLUMNS,
    GlobalSearchParams,
    alpha_expansion,
    bank_similarity,
    dba_vectors,
    global_candidates,
    knn_over_shards,
    normalize_similarities,
)
from copydetect.knn import Device
from copydetect.normalization import (
    Normalization,
    NormalizationParams,
    _Moments,
    fit_normalization,
    read_normalization,
    write_normalization,
)
from copydetect.shards import Embeddings, read_embedding_shard, write_embedding_shard

HAS_GPU = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


# --- helpers -----------------------------------------------------------------------------------


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def write_shards(
    directory: Path, ids: list[str], vectors: np.ndarray, parts: list[np.ndarray], dim: int
) -> list[Path]:
    """One shard per row-index array of ``parts`` (an empty part gives an empty shard)."""
    paths = []
    for s, rows in enumerate(parts):
        path = directory / f"shard{s}.h5"
        write_embedding_shard(path, [ids[i] for i in rows], vectors[rows], dim=dim)
        paths.append(path)
    return paths


def oracle(queries: np.ndarray, paths: list[Path], norm: Normalization, k: int) -> tuple:
    """Brute force in float64 over all shards at once: (sims, ids, shards), ties by id."""
    embs = [read_embedding_shard(p) for p in paths]
    ids = np.array([i for e in embs for i in e.ids], dtype=str)
    shards = np.array([p.stem for p, e in zip(paths, embs, strict=True) for _ in e.ids], dtype=str)
    ref = np.concatenate([norm.apply(e.vectors) for e in embs]).astype(np.float64)
    sims = queries.astype(np.float64) @ ref.T
    order = np.lexsort((np.broadcast_to(ids, sims.shape), -sims), axis=-1)[:, :k]
    return np.take_along_axis(sims, order, -1), ids[order], shards[order]


@pytest.fixture
def tied_references(tmp_path: Path) -> SimpleNamespace:
    """40 random references in 3 shards + an empty one; R005 has exact duplicates in every shard
    (ties at the top and at the k-th place); ids are scattered over the shards."""
    rng = np.random.default_rng(7)
    d = 16
    vectors = unit(rng.normal(size=(44, d)))
    vectors[40:] = vectors[5]  # R040..R043: duplicates of R005
    ids = [f"R{i:03d}" for i in range(44)]
    perm = rng.permutation(44)
    parts = [perm[:15], perm[15:30], perm[30:], np.array([], dtype=np.int64)]
    paths = write_shards(tmp_path, ids, vectors, parts, d)
    whole = tmp_path / "whole"
    whole.mkdir()
    single = write_shards(whole, ids, vectors, [np.arange(44)], d)
    queries = unit(rng.normal(size=(12, d)))
    queries[0] = vectors[5]  # five-way tie at the top
    queries[1] = unit(vectors[5] + 0.01 * rng.normal(size=d))  # near-tie region
    return SimpleNamespace(d=d, paths=paths, single=single, queries=queries, ids=ids)


# --- k-NN over shards -------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 7, 44])
def test_knn_over_shards_equals_single_exact_search_with_ties(
    tied_references: SimpleNamespace, k: int
) -> None:
    data = tied_references
    norm = Normalization.identity(data.d)
    queries = Embeddings([f"Q{i:02d}" for i in range(len(data.queries))], data.queries)
    found = knn_over_shards(queries.vectors, data.paths, norm, k, Device())
    sims, ids, shards = oracle(data.queries, data.paths, norm, k)
    assert found.sims.dtype == np.float64
    np.testing.assert_array_equal(found.ids, ids)
    np.testing.assert_array_equal(found.shards, shards)
    np.testing.assert_allclose(found.sims, sims, atol=1e-6)
    if k >= 5:  # the query equal to R005 sees its 5 copies first, ordered by id
        assert list(found.ids[0, :5]) == ["R005", "R040", "R041", "R042", "R043"]
    # The shard split changes nothing, bit for bit.
    whole = knn_over_shards(queries.vectors, data.single, norm, k, Device())
    np.testing.assert_array_equal(whole.ids, found.ids)
    np.testing.assert_array_equal(whole.sims, found.sims)


def test_tie_at_the_kth_place_goes_to_the_smaller_id(tied_references: SimpleNamespace) -> None:
    data = tied_references
    queries = Embeddings(["Q"], data.queries[:1])
    norm = Normalization.identity(data.d)
    found = knn_over_shards(queries.vectors, data.paths, norm, 2, Device())
    assert list(found.ids[0]) == ["R005", "R040"]
    assert found.sims[0, 0] == found.sims[0, 1]


def test_fewer_references_than_k_are_padded(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = unit(rng.normal(size=(4, 8)))
    paths = write_shards(tmp_path, ["a", "b", "c", "d"], vectors, [np.arange(2), [2, 3]], 8)
    queries = Embeddings(["q0", "q1"], unit(rng.normal(size=(2, 8))))
    norm = Normalization.identity(8)
    found = knn_over_shards(queries.vectors, paths, norm, 10, Device())
    assert found.sims.shape == (2, 10)
    assert (found.ids[:, :4] != "").all() and (found.ids[:, 4:] == "").all()
    assert np.isneginf(found.sims[:, 4:]).all()
    assert (found.shards[:, 4:] == "").all()
    table = global_candidates(queries, paths, norm, GlobalSearchParams(k=10, use_gpu="never"))
    assert table.groupby("query_id").size().to_dict() == {"q0": 4, "q1": 4}
    assert np.isfinite(table[["global_similarity", "global_normalized"]].to_numpy()).all()


def test_empty_query_shard(tmp_path: Path, tied_references: SimpleNamespace) -> None:
    data = tied_references
    write_embedding_shard(tmp_path / "q.h5", [], np.zeros((0, data.d)), dim=data.d)
    queries = read_embedding_shard(tmp_path / "q.h5")
    norm = Normalization.identity(data.d, bank=unit(np.ones((3, data.d))))
    found = knn_over_shards(queries.vectors, data.paths, norm, 5, Device())
    assert found.sims.shape == (0, 5)
    params = GlobalSearchParams(k=5, candidates_per_query=5, qe_k=2, use_gpu="never")
    table = global_candidates(queries, data.paths, norm, params)
    assert list(table.columns) == CANDIDATE_COLUMNS and len(table) == 0


def test_no_reference_at_all(tmp_path: Path) -> None:
    paths = write_shards(tmp_path, [], np.zeros((0, 4)), [np.array([], dtype=np.int64)], 4)
    queries = Embeddings(["q"], unit(np.ones((1, 4))))
    table = global_candidates(
        queries, paths, Normalization.identity(4), GlobalSearchParams(use_gpu="never")
    )
    assert len(table) == 0 and list(table.columns) == CANDIDATE_COLUMNS


@pytest.mark.skipif(not HAS_GPU, reason="needs faiss-gpu and a GPU")
def test_gpu_equals_cpu(tied_references: SimpleNamespace) -> None:
    data = tied_references
    queries = Embeddings([str(i) for i in range(len(data.queries))], data.queries)
    norm = Normalization.identity(data.d)
    cpu = knn_over_shards(queries.vectors, data.paths, norm, 7, Device())
    gpu = knn_over_shards(queries.vectors, data.paths, norm, 7, Device.choose("always"))
    np.testing.assert_array_equal(gpu.ids, cpu.ids)
    np.testing.assert_allclose(gpu.sims, cpu.sims, atol=1e-6)


# --- normalization fit -------------------------------------------------------------------------


@pytest.fixture
def training(tmp_path: Path) -> SimpleNamespace:
    """300 anisotropic vectors (very different variances per direction, large mean) in 3 shards
    and the same vectors in one shard."""
    rng = np.random.default_rng(3)
    d = 32
    scales = np.geomspace(3.0, 0.01, d)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    vectors = ((rng.normal(size=(300, d)) * scales) @ basis.T + 2.0).astype(np.float32)
    ids = [f"T{i:04d}" for i in range(300)]
    perm = rng.permutation(300)
    split = tmp_path / "split"
    split.mkdir()
    paths = write_shards(split, ids, vectors, [perm[:80], perm[80:200], perm[200:]], d)
    single = write_shards(tmp_path, ids, vectors, [np.arange(300)], d)
    stored = np.concatenate([read_embedding_shard(p).vectors for p in single])
    return SimpleNamespace(d=d, paths=paths, single=single, vectors=stored)


def test_pca_whitening_fit_is_deterministic_and_whitens(training: SimpleNamespace) -> None:
    params = NormalizationParams(pca_dim=8, whiten=True, bank_size=50)
    a = fit_normalization(training.paths, params)
    b = fit_normalization(training.paths, params)
    np.testing.assert_array_equal(a.projection, b.projection)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.bank, b.bank)
    assert a.bank_ids == b.bank_ids and len(a.bank_ids) == 50 and a.n_fit == 300
    assert a.projection.shape == (32, 8) and a.output_dim == 8
    # Whitened: unit covariance of the projected training data (before the L2).
    cov = np.cov(training.vectors.astype(np.float64), rowvar=False, bias=True)
    np.testing.assert_allclose(a.projection.T @ cov @ a.projection, np.eye(8), atol=1e-8)
    np.testing.assert_allclose(a.mean, training.vectors.mean(axis=0), atol=1e-6)
    out = a.apply(training.vectors)
    assert out.dtype == np.float32 and out.shape == (300, 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(a.bank, axis=1), 1.0, atol=1e-6)


def test_plain_pca_is_orthonormal_with_descending_eigenvalues(training: SimpleNamespace) -> None:
    norm = fit_normalization(training.paths, NormalizationParams(pca_dim=8, whiten=False))
    np.testing.assert_allclose(norm.projection.T @ norm.projection, np.eye(8), atol=1e-10)
    assert (np.diff(norm.eigenvalues) <= 0).all()
    cov = np.cov(training.vectors.astype(np.float64), rowvar=False, bias=True)
    np.testing.assert_allclose(np.linalg.eigvalsh(cov)[::-1][:8], norm.eigenvalues, rtol=1e-8)


def test_fit_does_not_depend_on_the_shard_split(training: SimpleNamespace) -> None:
    params = NormalizationParams(pca_dim=8, bank_size=40, max_fit_vectors=120, seed=5)
    split = fit_normalization(training.paths, params)
    whole = fit_normalization(list(reversed(training.single)), params)
    assert split.bank_ids == whole.bank_ids and split.n_fit == whole.n_fit == 120
    np.testing.assert_allclose(split.projection, whole.projection, rtol=1e-6, atol=1e-8)
    reseeded = fit_normalization(training.paths, NormalizationParams(pca_dim=8, seed=6))
    assert reseeded.bank_ids[:40] != split.bank_ids  # the seed does pick the sample


def test_fit_sample_is_bounded(training: SimpleNamespace) -> None:
    norm = fit_normalization(training.paths, NormalizationParams(pca_dim=4, max_fit_vectors=50))
    assert norm.n_fit == 50 and len(norm.bank) == 300  # bank_size 10 000 > 300: all of them


def test_no_pca_is_l2_only(training: SimpleNamespace) -> None:
    norm = fit_normalization(training.paths, NormalizationParams(pca_dim=None, bank_size=20))
    assert norm.projection is None and norm.output_dim == 32 and len(norm.bank) == 20
    x = training.vectors[:5]
    np.testing.assert_allclose(norm.apply(x), unit(x.astype(np.float64)), atol=1e-7)
    assert fit_normalization([], NormalizationParams(pca_dim=None)).bank.shape[0] == 0


def test_whitening_floor_keeps_rank_deficient_fits_finite(training: SimpleNamespace) -> None:
    few = training.vectors[:5]
    path = training.paths[0].parent / "few.h5"
    write_embedding_shard(path, [f"F{i}" for i in range(5)], few)
    norm = fit_normalization([path], NormalizationParams(pca_dim=16))
    out = norm.apply(training.vectors)
    assert np.isfinite(norm.projection).all() and np.isfinite(out).all()
    with pytest.raises(ValueError, match="at least 2"):
        fit_normalization([], NormalizationParams(pca_dim=4))


@pytest.mark.parametrize("pca_dim", [8, None])
def test_normalization_file_round_trip(
    tmp_path: Path, training: SimpleNamespace, pca_dim: int | None
) -> None:
    norm = fit_normalization(training.paths, NormalizationParams(pca_dim=pca_dim, bank_size=30))
    path = tmp_path / "out" / "norm.h5"
    write_normalization(path, norm)
    back = read_normalization(path)
    assert [p.name for p in path.parent.iterdir()] == ["norm.h5"]  # no temporary left behind
    assert back.input_dim == norm.input_dim and back.bank_ids == norm.bank_ids
    assert back.n_fit == norm.n_fit
    np.testing.assert_array_equal(back.bank, norm.bank)
    np.testing.assert_array_equal(back.apply(training.vectors), norm.apply(training.vectors))
    if pca_dim is None:
        assert back.projection is None


# --- score normalization -----------------------------------------------------------------------


def test_score_normalization_subtracts_beta_times_mean_of_top_n_bank_sims(tmp_path: Path) -> None:
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    norm = Normalization.identity(2, bank=bank)
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    # Bank similarities 1, 0, 0.6: top 2 average 0.8, all three 1.6 / 3.
    np.testing.assert_allclose(bank_similarity(query, norm.bank, 2, Device()), [0.8], atol=1e-7)
    np.testing.assert_allclose(bank_similarity(query, norm.bank, 5, Device()), [1.6 / 3], atol=1e-7)
    np.testing.assert_allclose(
        normalize_similarities(np.array([[0.9, 0.5]]), np.array([0.8]), 0.5), [[0.5, 0.1]]
    )
    refs = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    paths = write_shards(tmp_path, ["ra", "rb"], refs, [np.arange(2)], 2)
    params = GlobalSearchParams(
        k=2, candidates_per_query=2, normalization_beta=0.5, normalization_neighbors=2
    )
    table = global_candidates(Embeddings(["q"], query), paths, norm, params)
    assert list(table["reference_id"]) == ["ra", "rb"]
    term = 0.5 * bank_similarity(query, norm.bank, 2, Device())[0]
    np.testing.assert_array_equal(
        table["global_normalized"], table["global_similarity"].to_numpy() - term
    )
    np.testing.assert_allclose(table["global_normalized"], [1.0 - 0.4, 0.0 - 0.4], atol=1e-6)


def test_crowded_query_scores_lower_than_isolated_one(tmp_path: Path) -> None:
    """Two matches with the same raw similarity: the one whose query resembles much of the
    bank (a generic image) must score lower after normalization — the point of it."""
    rng = np.random.default_rng(11)
    d = 16
    e = np.eye(d)
    crowd = unit(e[0] + 0.3 * rng.normal(size=(50, d)))
    others = unit(rng.normal(size=(50, d)) * np.r_[1.0, 0.0, np.ones(d - 2)])  # away from e1
    norm = Normalization.identity(d, bank=np.concatenate([crowd, others]))
    refs = unit(np.stack([e[0] + 0.5 * e[2], e[1] + 0.5 * e[2]]))
    paths = write_shards(tmp_path, ["r_crowded", "r_isolated"], refs, [np.arange(2)], d)
    queries = Embeddings(["q_crowded", "q_isolated"], e[:2].astype(np.float32))
    table = global_candidates(queries, paths, norm, GlobalSearchParams(k=1, candidates_per_query=1))
    table = table.set_index("query_id")
    raw = table["global_similarity"]
    assert raw["q_crowded"] == pytest.approx(raw["q_isolated"], abs=1e-3)
    assert table.loc["q_crowded", "reference_id"] == "r_crowded"
    assert (
        table.loc["q_crowded", "global_normalized"]
        < table.loc["q_isolated", "global_normalized"] - 0.2
    )


# --- αQE and DBA -------------------------------------------------------------------------------


def test_alpha_expansion_and_dba_by_hand() -> None:
    r = np.array([[1.0, 0.0]])
    nb = np.array([[[0.0, 1.0], [1.0, 1.0]]])
    sims = np.array([[0.5, -np.inf]])  # the second neighbour is missing
    np.testing.assert_allclose(dba_vectors(r, nb, sims, 2, 1.0), unit(np.array([[1.0, 0.5]])))
    np.testing.assert_allclose(dba_vectors(r, nb, sims, 1, 3.0), unit(np.array([[1.0, 0.125]])))
    np.testing.assert_allclose(alpha_expansion(2 * r, nb, sims, 0, 3.0), r)
    negative = np.array([[-0.5, 0.2]])  # a negative similarity weighs 0, also for fractional α
    np.testing.assert_allclose(
        alpha_expansion(r, nb, negative, 2, 0.5), unit(np.array([[1 + 0.2**0.5, 0.2**0.5]]))
    )


@pytest.fixture
def planted_clusters(tmp_path: Path) -> SimpleNamespace:
    """10 clusters of 8 references around a centre, 2000 random distractors, one noisy query
    per cluster: plain search misses some members, the members pull each other in with αQE."""
    rng = np.random.default_rng(0)
    d, n_clusters, members, n_distract = 32, 10, 8, 2000
    centers = unit(rng.normal(size=(n_clusters, d)))
    cluster = unit(centers[:, None, :] + 0.45 * unit(rng.normal(size=(n_clusters, members, d))))
    vectors = np.concatenate([cluster.reshape(-1, d), unit(rng.normal(size=(n_distract, d)))])
    ids = [f"C{c}_{j}" for c in range(n_clusters) for j in range(members)]
    ids += [f"D{i:05d}" for i in range(n_distract)]
    parts = np.array_split(rng.permutation(len(ids)), 3)
    paths = write_shards(tmp_path, ids, vectors, parts, d)
    queries = unit(centers + 1.3 * unit(rng.normal(size=(n_clusters, d))))
    return SimpleNamespace(
        paths=paths,
        queries=Embeddings([f"Q{c}" for c in range(n_clusters)], queries),
        members=members,
        norm=Normalization.identity(d),
    )


def cluster_recall(table: pd.DataFrame, members: int) -> float:
    hit = [
        r.startswith(f"C{q[1:]}_") for q, r in zip(table.query_id, table.reference_id, strict=True)
    ]
    return sum(hit) / (members * table["query_id"].nunique())


def test_qe_off_equals_plain_search(planted_clusters: SimpleNamespace) -> None:
    data = planted_clusters
    params = GlobalSearchParams(k=8, candidates_per_query=8, qe_k=0, normalize_scores=False)
    table = global_candidates(data.queries, data.paths, data.norm, params)
    transformed = Embeddings(data.queries.ids, data.norm.apply(data.queries.vectors))
    found = knn_over_shards(transformed.vectors, data.paths, data.norm, 8, Device())
    assert list(table["reference_id"]) == list(found.ids.ravel())
    np.testing.assert_array_equal(table["global_similarity"], found.sims.astype(np.float32).ravel())
    np.testing.assert_array_equal(table["global_normalized"], table["global_similarity"])


def test_qe_gathers_the_vectors_of_the_first_pass_top(planted_clusters: SimpleNamespace) -> None:
    """The vectors gathered during the sharded merge are those of the final top references."""
    data = planted_clusters
    x = data.norm.apply(data.queries.vectors)
    top = knn_over_shards(x, data.paths, data.norm, 8, Device(), gather=3)
    embs = [read_embedding_shard(p) for p in data.paths]
    vectors = dict(
        zip(
            [i for e in embs for i in e.ids], np.concatenate([e.vectors for e in embs]), strict=True
        )
    )
    for row, ids in enumerate(top.ids[:, :3]):
        expected = data.norm.apply(np.stack([vectors[i] for i in ids]))
        np.testing.assert_array_equal(top.vectors[row], expected)


def test_qe_improves_recall_on_planted_clusters(planted_clusters: SimpleNamespace) -> None:
    data = planted_clusters
    base = GlobalSearchParams(k=8, candidates_per_query=8, normalize_scores=False)
    plain = cluster_recall(global_candidates(data.queries, data.paths, data.norm, base), 8)
    expanded = global_candidates(
        data.queries, data.paths, data.norm, GlobalSearchParams(**{**base.__dict__, "qe_k": 3})
    )
    assert plain < 0.8  # the planted problem is not trivial
    assert cluster_recall(expanded, 8) > plain + 0.1


# --- candidates --------------------------------------------------------------------------------


def test_candidates_order_and_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    d = 8
    vectors = unit(rng.normal(size=(30, d)))
    vectors[1] = vectors[0]  # "r01" and "r00" tie for every query
    ids = [f"r{i:02d}" for i in range(30)][::-1]  # ids not in vector order
    ids[0], ids[1] = "r_b", "r_a"  # the duplicated pair: r_a must come first
    paths = write_shards(tmp_path, ids, vectors, np.array_split(np.arange(30), 2), d)
    queries = Embeddings([f"q{i}" for i in (3, 1, 2, 0)], unit(rng.normal(size=(4, d))))
    queries.vectors[0] = vectors[0]
    bank = unit(rng.normal(size=(20, d)))
    norm = Normalization.identity(d, bank=bank)
    table = global_candidates(queries, paths, norm, GlobalSearchParams(k=6, candidates_per_query=3))
    assert list(table.columns) == CANDIDATE_COLUMNS
    assert list(table["query_id"]) == [q for q in ("q0", "q1", "q2", "q3") for _ in range(3)]
    assert list(table["global_rank"]) == [1, 2, 3] * 4
    for _, group in table.groupby("query_id"):
        assert (np.diff(group["global_normalized"]) <= 0).all()
    top = table[table["query_id"] == "q3"]
    assert list(top["reference_id"][:2]) == ["r_a", "r_b"]
    assert set(table["reference_shard"]) <= {"shard0", "shard1"}
    raw = global_candidates(
        queries,
        paths,
        norm,
        GlobalSearchParams(k=6, candidates_per_query=3, normalize_scores=False),
    )
    np.testing.assert_array_equal(raw["global_normalized"], raw["global_similarity"])
    assert list(raw["reference_id"]) == list(table["reference_id"])  # a per-query shift


def test_params_reject_unknown_keys_and_bad_values() -> None:
    assert GlobalSearchParams.from_mapping({"k": 5, "candidates_per_query": 5}).k == 5
    assert NormalizationParams.from_mapping({"pca_dim": None}).uses_pca is False
    with pytest.raises(ValueError, match="unknown global.search parameters"):
        GlobalSearchParams.from_mapping({"kk": 3})
    with pytest.raises(ValueError, match="unknown global.normalization parameters"):
        NormalizationParams.from_mapping({"pca": 3})
    with pytest.raises(ValueError, match="candidates_per_query"):
        GlobalSearchParams(k=5, candidates_per_query=6)
    with pytest.raises(ValueError, match="use_gpu"):
        GlobalSearchParams(use_gpu="yes")
    with pytest.raises(ValueError, match="qe_alpha"):
        GlobalSearchParams(qe_alpha=-1)


# --- rule scripts -------------------------------------------------------------------------------


def test_rule_scripts_end_to_end(tmp_path: Path, training: SimpleNamespace) -> None:
    norm_path, out = tmp_path / "norm.h5", tmp_path / "cands" / "q0.csv"
    run_script(
        "fit_normalization.py",
        SimpleNamespace(
            input=SimpleNamespace(embeddings=[str(p) for p in training.paths]),
            output=SimpleNamespace(normalization=str(norm_path)),
            params=SimpleNamespace(normalization={"pca_dim": 8, "bank_size": 100}),
            log=[str(tmp_path / "fit.log")],
            threads=1,
        ),
    )
    write_embedding_shard(tmp_path / "q0.h5", ["qa", "qb"], training.vectors[:2] + 0.01)
    projected = []
    for raw in [tmp_path / "q0.h5", *training.paths]:
        projected.append(tmp_path / "projected" / Path(raw).name)
        run_script(
            "project_embeddings.py",
            SimpleNamespace(
                input=SimpleNamespace(embeddings=str(raw), normalization=str(norm_path)),
                output=SimpleNamespace(projected=str(projected[-1])),
                log=[str(tmp_path / "project.log")],
            ),
        )
    assert read_embedding_shard(projected[0]).vectors.shape == (2, 8)
    run_script(
        "global_search.py",
        SimpleNamespace(
            input=SimpleNamespace(
                queries=str(projected[0]),
                references=[str(p) for p in projected[1:]],
                normalization=str(norm_path),
            ),
            output=SimpleNamespace(candidates=str(out)),
            params=SimpleNamespace(
                search={"k": 5, "candidates_per_query": 4, "use_gpu": "never"},
                gpu_lock_dir=str(tmp_path / "locks"),
            ),
            resources={"gpu": 0},
            log=[str(tmp_path / "search.log")],
            threads=2,
        ),
    )
    table = pd.read_csv(out)
    assert list(table.columns) == CANDIDATE_COLUMNS and len(table) == 8
    assert list(table[table["global_rank"] == 1]["reference_id"]) == ["T0000", "T0001"]
    assert "peak RSS" in (tmp_path / "search.log").read_text()
    assert "fitted on 300 vectors" in (tmp_path / "fit.log").read_text()


def test_dba_pulls_near_duplicate_references_together(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = global_search.l2_normalize(rng.normal(size=(6, 16))).astype(np.float32)
    twin = global_search.l2_normalize(base[:1] + 0.3 * rng.normal(size=(1, 16)))[0].astype(
        np.float32
    )
    vectors = np.vstack([base, twin])
    ids = [f"R{i}" for i in range(7)]
    write_embedding_shard(tmp_path / "s0000.h5", ids[:4], vectors[:4])
    write_embedding_shard(tmp_path / "s0001.h5", ids[4:], vectors[4:])
    shards = [tmp_path / "s0000.h5", tmp_path / "s0001.h5"]
    shard = read_embedding_shard(shards[0])
    unchanged = global_search.augment_references(shard, shards, 0, 3.0, "never")
    np.testing.assert_allclose(unchanged, shard.vectors, atol=1e-3)
    augmented = global_search.augment_references(shard, shards, 1, 3.0, "never")
    np.testing.assert_allclose(np.linalg.norm(augmented, axis=1), 1.0, atol=1e-5)
    # R0's best other reference is its twin R6: R0 moves towards it, never onto itself.
    before, after = float(shard.vectors[0] @ twin), float(augmented[0] @ twin)
    assert after > before
    expected = global_search.dba_vectors(
        shard.vectors[:1], twin[None, None, :], np.array([[shard.vectors[0] @ twin]]), 1, 3.0
    )
    np.testing.assert_allclose(augmented[:1], expected, atol=1e-3)


def test_fewer_vectors_than_dimensions_fit_through_the_gram_matrix(tmp_path: Path) -> None:
    """n < d: the n − 1 spanned eigenpairs come from the n × n Gram matrix and equal the
    covariance's; the other pca_dim − 19 directions are an orthonormal completion."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(20, 64)).astype(np.float32) + 2.0
    path = tmp_path / "few.h5"
    write_embedding_shard(path, [f"F{i:02d}" for i in range(20)], vectors)
    norm = fit_normalization([path], NormalizationParams(pca_dim=32, whiten=False))
    assert norm.output_dim == 32
    stored = read_embedding_shard(path).vectors.astype(np.float64)  # float16 on disk
    cov = np.cov(stored, rowvar=False, bias=True)
    expected = np.linalg.eigvalsh(cov)[::-1][:32].clip(min=0)
    np.testing.assert_allclose(norm.eigenvalues, expected, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(norm.projection.T @ norm.projection, np.eye(32), atol=1e-10)
    spanned = norm.projection[:, :19]
    np.testing.assert_allclose(cov @ spanned, spanned * norm.eigenvalues[:19], atol=1e-8)
    again = fit_normalization([path], NormalizationParams(pca_dim=32, whiten=False))
    np.testing.assert_array_equal(norm.projection, again.projection)


def test_moments_keep_rows_until_the_dimension_then_sums() -> None:
    """The covariance is the same whether the batches stay below the dimension (rows kept,
    no d × d sums made) or cross it (the kept rows folded into the sums once)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 16)) * 3.0 + 100.0
    for cuts in ([5, 10], [5, 10, 15, 30], [39]):
        moments = _Moments()
        for batch in np.split(x, cuts):
            moments.add(batch)
        mean, cov = moments.mean_cov()
        np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(cov, np.cov(x, rowvar=False, bias=True), atol=1e-9)
        assert moments.s2 is not None and moments.rows is None  # 40 rows ≥ 16 dimensions
    few = _Moments()
    few.add(x[:10])
    assert few.s2 is None and few.rows is not None  # below the dimension: rows only
    expected = np.cov(x[:10], rowvar=False, bias=True)
    np.testing.assert_allclose(few.mean_cov()[1], expected, atol=1e-9)


def test_empty_vectors_carry_no_evidence(tmp_path: Path, training: SimpleNamespace) -> None:
    """All-zero embeddings (VLAD of featureless images) stay zero through the PCA-whitening,
    are left out of its fit, and an empty query gets no candidate, even against empty
    references (centring would otherwise make every empty vector the same −mean direction)."""
    fitted = fit_normalization(training.single, NormalizationParams(pca_dim=8))
    with_zeros = tmp_path / "with_zeros"
    with_zeros.mkdir()
    padded = np.concatenate([training.vectors, np.zeros((5, training.d), np.float32)])
    ids = [f"T{i:04d}" for i in range(len(padded))]
    refit = fit_normalization(
        write_shards(with_zeros, ids, padded, [np.arange(len(padded))], training.d),
        NormalizationParams(pca_dim=8),
    )
    np.testing.assert_allclose(refit.mean, fitted.mean)  # the zero rows did not shape the fit
    projected = fitted.apply(np.stack([np.zeros(training.d), training.vectors[0]]))
    assert not projected[0].any() and projected[1].any()

    refs = np.concatenate([np.zeros((2, training.d), np.float32), training.vectors[:4]])
    ref_ids = ["empty_a", "empty_b", "r0", "r1", "r2", "r3"]
    paths = write_shards(tmp_path, ref_ids, refs, [np.arange(6)], training.d)
    queries = Embeddings(["blank", "q"], np.stack([np.zeros(training.d), training.vectors[0]]))
    params = GlobalSearchParams(k=6, candidates_per_query=6)
    table = global_candidates(queries, paths, fitted, params)
    assert set(table["query_id"]) == {"q"}
    empty = table[table["reference_id"].str.startswith("empty")]
    assert (empty["global_similarity"] == 0).all() and (empty["global_rank"] > 4).all()
