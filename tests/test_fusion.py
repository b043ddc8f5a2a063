"""Score fusion: monotone in every evidence column, any subset of branches, deterministic."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from script_runner import run_script

from copydetect.fusion import (
    FusionModel,
    FusionParams,
    RuleConstants,
    background,
    backgrounds,
    best_of_others,
    find_branches,
    fit_logistic,
    fuse_rule,
    fused_predictions,
    join_pair_tables,
    label_pairs,
    read_scored_pairs,
    score_pairs,
    squash,
)
from copydetect.metrics import GroundTruth, GroundTruthMatch
from copydetect.tables import read_table

GLOBAL_MODELS = ("vlad", "sscd", "crop_vlad")


def random_pairs(n: int = 400, seed: int = 0, crop: bool = True) -> pd.DataFrame:
    """A pair table with every kind of branch; each branch leaves some pairs unproposed (NaN)."""
    rng = np.random.default_rng(seed)
    inliers = rng.integers(0, 40, n).astype(float)
    matches = inliers + rng.integers(0, 30, n)
    table = {
        "query_id": [f"Q{i // 5:04d}" for i in range(n)],
        "reference_id": [f"R{i % 5:02d}{i // 5 % 7}" for i in range(n)],
        "reference_shard": "s0000",
        "local_votes": np.where(rng.random(n) < 0.3, np.nan, rng.integers(2, 60, n)),
        "matches": matches,
        "inliers": inliers,
        "inlier_ratio": np.where(matches > 0, inliers / np.maximum(matches, 1), 0.0),
        "mean_match_distance": rng.uniform(0, math.sqrt(2), n),
    }
    for model in GLOBAL_MODELS if crop else GLOBAL_MODELS[:2]:
        similarity = np.where(rng.random(n) < 0.4, np.nan, rng.uniform(0.1, 0.9, n))
        table[f"{model}_similarity"] = similarity
        table[f"{model}_normalized"] = similarity - 0.05
        table[f"{model}_rank"] = np.where(np.isnan(similarity), np.nan, 1.0)
    if crop:
        crop_inliers = np.where(rng.random(n) < 0.5, np.nan, rng.integers(0, 40, n))
        table["crop_local_votes"] = np.where(np.isnan(crop_inliers), np.nan, 5.0)
        table["crop_local_inliers"] = crop_inliers
        table["crop_local_inlier_ratio"] = np.where(np.isnan(crop_inliers), np.nan, 0.5)
        table["crop_local_mean_match_distance"] = np.where(np.isnan(crop_inliers), np.nan, 0.4)
    return pd.DataFrame(table)


def fitted_model(pairs: pd.DataFrame) -> FusionModel:
    """A logistic model fitted on labels that follow the evidence (so most weights are > 0)."""
    signal = pairs["inliers"].to_numpy() + 30 * np.nan_to_num(pairs["vlad_normalized"].to_numpy())
    return fit_logistic(pairs, signal > np.median(signal), l2=1e-2)


# Columns where a larger value is stronger evidence; mean_match_distance is the reverse.
STRONGER_WHEN_HIGHER = [
    "inliers",
    "inlier_ratio",
    "local_votes",
    "vlad_similarity",
    "vlad_normalized",
    "sscd_normalized",
    "crop_vlad_normalized",
    "crop_local_inliers",
    "crop_local_inlier_ratio",
    "crop_local_votes",
]


def _rule_scores(pairs: pd.DataFrame, stats) -> np.ndarray:
    return fuse_rule(pairs, RuleConstants(), stats)[0]


def _logistic_scores(model: FusionModel):
    return lambda pairs, stats: model.apply(pairs, stats)[0]


@pytest.mark.parametrize("method", ["rule", "logistic"])
@pytest.mark.parametrize("column", [*STRONGER_WHEN_HIGHER, "mean_match_distance"])
def test_stronger_evidence_never_lowers_the_score(method: str, column: str) -> None:
    pairs = random_pairs()
    score = _rule_scores if method == "rule" else _logistic_scores(fitted_model(pairs))
    stats = backgrounds(pairs, find_branches(pairs))  # fixed chance levels (module docstring)
    before = score(pairs, stats)
    rng = np.random.default_rng(1)
    queries = pairs["query_id"].to_numpy()
    for trial in range(5):
        changed = pairs.copy()
        # One pair of about half the queries: a query's other candidates are the chance level
        # of its local evidence (contrasted_inliers), as the fixed stats are of a global score.
        picked = pairs.sample(frac=1.0, random_state=trial).drop_duplicates("query_id")
        picked = picked[rng.random(len(picked)) < 0.5]
        rows = pairs.index.isin(picked.index)
        untouched = ~np.isin(queries, picked["query_id"])
        step = rng.uniform(0, 5 if column.endswith(("inliers", "votes")) else 0.3, len(pairs))
        values = changed[column].to_numpy(dtype=float)
        if column == "mean_match_distance":
            values = np.where(rows, np.maximum(values - step, 0.0), values)
        else:
            # A branch that had not proposed a pair now proposes it: also stronger evidence.
            values = np.where(rows, np.nan_to_num(values, nan=0.0) + step, values)
            if column.endswith("inlier_ratio"):
                values = np.minimum(values, 1.0)
        changed[column] = values
        after = score(changed, stats)
        assert np.all(after[rows] >= before[rows]), f"{column}, trial {trial}"
        assert np.array_equal(after[untouched], before[untouched])
        if method == "rule" and not column.endswith("_similarity"):  # _normalized is used
            assert np.any(after[rows] > before[rows])


def test_an_ambiguous_query_and_repeated_structure_weaken_local_evidence() -> None:
    pairs = pd.DataFrame(
        {
            "query_id": ["Q1", "Q1", "Q2", "Q2", "Q3"],
            "reference_id": ["A", "B", "A", "B", "C"],
            "matches": [30, 4, 30, 28, 300],
            "inliers": [30, 0, 30, 28, 30],
            "inlier_ratio": [1.0, 0.0, 1.0, 28 / 30, 0.1],
            "mean_match_distance": [0.3] * 5,
        }
    )
    score, _ = fuse_rule(pairs, RuleConstants())
    # Q2's two references verify about as well: neither is as sure as Q1's single answer.
    assert score[2] < score[0] and score[3] < score[0]
    # 30 inliers among 300 matches (a text page against another) count for less than 30 of 30.
    assert score[4] < score[0]
    plain = RuleConstants(local_chance=0.0, local_contrast=0.0)
    assert fuse_rule(pairs, plain)[0][2] == pytest.approx(fuse_rule(pairs, plain)[0][0])


def test_best_of_others_is_the_largest_other_value_of_the_group() -> None:
    values = np.array([3.0, 7.0, 7.0, 1.0, 5.0])
    groups = np.array(["a", "a", "a", "b", "c"])
    assert best_of_others(values, groups).tolist() == [7.0, 7.0, 7.0, 0.0, 0.0]
    order = [4, 2, 0, 3, 1]
    assert best_of_others(values[order], groups[order]).tolist() == [0.0, 7.0, 7.0, 0.0, 7.0]


def test_scores_lie_strictly_inside_the_unit_interval_and_stay_distinct() -> None:
    pairs = random_pairs(crop=False)
    pairs.loc[:2, "inliers"] = [5000, 5001, 0]
    score, branch = fuse_rule(pairs, RuleConstants())
    assert np.all((score > 0) & (score < 1))
    assert score[1] > score[0]  # huge counts do not saturate to 1.0
    assert set(branch) == {"local", "vlad", "sscd"}
    assert np.isnan(branch["vlad"][np.isnan(pairs["vlad_normalized"])]).all()


def test_squash_is_continuous_increasing_and_never_reaches_one() -> None:
    ell = np.array([-700.0, -40.0, -1e-9, 0.0, 1e-9, 40.0, 1e6, 1e6 + 1])
    values = squash(ell)
    assert np.all(np.diff(values) > 0)
    assert np.all(values > 0) and np.all(values < 1)
    assert values[3] == 0.5 and abs(values[2] - 0.5) < 1e-9 and abs(values[4] - 0.5) < 1e-9
    assert squash(np.array([-2.0]))[0] == pytest.approx(1 / (1 + math.exp(2)))


def test_background_is_the_median_and_robust_spread() -> None:
    values = np.array([np.nan, 0.1, 0.2, 0.3, 0.4, 5.0])
    stats = background(values)
    assert stats.median == pytest.approx(0.3)
    assert stats.scale == pytest.approx(1.4826 * 0.1)
    assert background(np.array([0.5, 0.5])).scale == pytest.approx(0.01)  # floored
    assert background(np.array([np.nan])).median == 0.0


def only(pairs: pd.DataFrame, keep_local: bool, keep_global: bool) -> pd.DataFrame:
    local = ["local_votes", "matches", "inliers", "inlier_ratio", "mean_match_distance"]
    columns = ["query_id", "reference_id", "reference_shard"]
    columns += local if keep_local else []
    columns += [c for c in pairs if c.startswith(("vlad_", "sscd_"))] if keep_global else []
    return pairs.loc[:, columns]


@pytest.mark.parametrize("method", ["rule", "logistic"])
@pytest.mark.parametrize(
    ("keep_local", "keep_global", "branches"),
    [(True, False, ["local"]), (False, True, ["sscd", "vlad"]), (True, True, None)],
)
def test_any_subset_of_branches_is_scored(method, keep_local, keep_global, branches) -> None:
    full = random_pairs(crop=False)
    model = fitted_model(full) if method == "logistic" else None
    pairs = only(full, keep_local, keep_global)
    scored = score_pairs(pairs, FusionParams(method=method), model)
    names = [c.removeprefix("branch_") for c in scored if c.startswith("branch_")]
    assert names == (branches or ["local", "sscd", "vlad"])
    assert list(scored.columns[:3]) == ["query_id", "reference_id", "score"]
    proposed = scored[[f"branch_{b}" for b in names]].notna().any(axis=1)
    assert (scored["score"][proposed] > 0).all() and (scored["score"] < 1).all()
    if not keep_local:  # a pair no global model proposed has only the weakest evidence
        weakest = scored.loc[~proposed, "score"]
        assert (weakest.max() if len(weakest) else 0) <= scored.loc[proposed, "score"].min()


def test_crop_views_take_the_better_of_the_two() -> None:
    pairs = random_pairs()
    with_crop, _ = fuse_rule(pairs, RuleConstants())
    without = pairs.drop(columns=[c for c in pairs if c.startswith("crop_")])
    without_crop, _ = fuse_rule(without, RuleConstants())
    assert np.all(with_crop >= without_crop - 1e-15)
    assert np.any(with_crop > without_crop)
    branches = [b.name for b in find_branches(pairs)]
    assert branches == ["local", "crop_local", "crop_vlad", "sscd", "vlad"]


def test_empty_pairs_give_empty_outputs() -> None:
    pairs = join_pair_tables([random_pairs(crop=False).iloc[:0]])
    scored = score_pairs(pairs, FusionParams())
    assert scored.empty and list(scored.columns[:3]) == ["query_id", "reference_id", "score"]
    assert fused_predictions(scored, FusionParams()).empty


def test_crop_local_tables_are_prefixed_and_outer_joined() -> None:
    main = pd.DataFrame(
        {
            "query_id": ["Q1", "Q1"],
            "reference_id": ["R1", "R2"],
            "reference_shard": ["s0", "s0"],
            "local_votes": [4.0, np.nan],
            "inliers": [3, 0],
            "inlier_ratio": [0.5, 0.0],
            "mean_match_distance": [0.3, math.sqrt(2)],
            "vlad_normalized": [0.4, 0.8],
        }
    )
    crop = pd.DataFrame(
        {
            "query_id": ["Q1", "Q2"],
            "reference_id": ["R1", "R9"],
            "reference_shard": ["s0", "s1"],
            "local_votes": [30.0, 12.0],
            "inliers": [25, 9],
            "inlier_ratio": [0.9, 0.6],
            "mean_match_distance": [0.1, 0.2],
        }
    )
    pairs = join_pair_tables([main], [crop])
    assert list(zip(pairs.query_id, pairs.reference_id, strict=True)) == [
        ("Q1", "R1"),
        ("Q1", "R2"),
        ("Q2", "R9"),
    ]
    assert pairs["crop_local_inliers"].tolist()[0] == 25 and pairs["crop_local_votes"][2] == 12
    assert np.isnan(pairs["crop_local_inliers"][1]) and np.isnan(pairs["inliers"][2])
    assert "crop_local_reference_shard" not in pairs
    scored = score_pairs(pairs, FusionParams())
    assert scored["branch_crop_local"].notna().tolist() == [True, False, True]
    assert scored["score"][0] > scored["score"][1]  # the crop's 25 inliers beat vlad alone


def test_predictions_keep_top_k_then_the_cap_with_id_tie_breaks() -> None:
    scored = pd.DataFrame(
        {
            "query_id": ["Q2", "Q1", "Q1", "Q1", "Q0"],
            "reference_id": ["R9", "R1", "R2", "R3", "R9"],
            "score": [0.5, 0.9, 0.7, 0.6, 0.5],
        }
    )
    keep = fused_predictions(scored, FusionParams(top_k_per_query=2))
    assert list(zip(keep.query_id, keep.reference_id, strict=True)) == [
        ("Q1", "R1"),
        ("Q1", "R2"),
        ("Q0", "R9"),  # equal scores: by query id
        ("Q2", "R9"),
    ]
    assert len(fused_predictions(scored, FusionParams(max_predictions=3))) == 3


def test_params_from_mapping() -> None:
    params = FusionParams.from_mapping(
        {"method": "logistic", "model": "m.json", "development": {"run": "elsewhere"}}
    )
    assert params.method == "logistic" and params.model == "m.json"
    with pytest.raises(ValueError, match="unknown fusion parameters"):
        FusionParams.from_mapping({"topk": 3})
    with pytest.raises(ValueError, match="method"):
        FusionParams.from_mapping({"method": "mean"})
    with pytest.raises(ValueError, match=">= 0"):
        RuleConstants(global_weight=-1)


# --- logistic ----------------------------------------------------------------------------------


def test_logistic_fit_separates_a_separable_problem_with_non_negative_weights() -> None:
    rng = np.random.default_rng(3)
    n = 600
    positive = rng.random(n) < 0.2
    pairs = pd.DataFrame(
        {
            "query_id": [f"Q{i}" for i in range(n)],
            "reference_id": "R",
            "inliers": np.where(positive, rng.integers(12, 40, n), rng.integers(0, 4, n)),
            "inlier_ratio": rng.uniform(0, 1, n),  # noise
            "mean_match_distance": rng.uniform(0, 1, n),
            # anti-correlated with the label: an unconstrained fit would weigh it negatively
            "vlad_normalized": np.where(positive, 0.2, 0.6) + rng.normal(0, 0.01, n),
        }
    )
    model = fit_logistic(pairs, positive, l2=1e-4)
    assert all(w >= 0 for w in model.weights)
    weights = dict(zip(model.features, model.weights, strict=True))
    assert weights["vlad:z_knee"] == 0 and weights["vlad:z_shift"] == 0
    assert weights["local:inliers_log"] + weights["local:inliers_knee"] > 0
    score, branch = model.apply(pairs)
    assert score[positive].min() > score[~positive].max()
    assert set(branch) == {"local", "vlad"}
    assert model.n_pairs == n and model.n_positives == int(positive.sum())


def test_logistic_fit_needs_both_classes() -> None:
    pairs = random_pairs(50, crop=False)
    with pytest.raises(ValueError, match="both positive and negative"):
        fit_logistic(pairs, np.zeros(len(pairs), dtype=bool))
    with pytest.raises(ValueError, match="labels"):
        fit_logistic(pairs, np.zeros(3, dtype=bool))


def test_model_json_round_trip_and_errors(tmp_path: Path) -> None:
    pairs = random_pairs(crop=False)
    model = fitted_model(pairs)
    model.to_json(tmp_path / "model.json")
    back = FusionModel.from_json(tmp_path / "model.json")
    assert back == model
    np.testing.assert_array_equal(back.apply(pairs)[0], model.apply(pairs)[0])
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="bad.json: bad fusion model"):
        FusionModel.from_json(tmp_path / "bad.json")
    document = json.loads((tmp_path / "model.json").read_text())
    document["weights"]["local:ratio"] = -1.0
    (tmp_path / "negative.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=">= 0"):
        FusionModel.from_json(tmp_path / "negative.json")


def test_a_model_applies_to_tables_with_other_branches() -> None:
    model = fitted_model(random_pairs(crop=False))
    pairs = only(random_pairs(seed=5), keep_local=True, keep_global=False)
    score, branch = model.apply(pairs)  # no global column: its features count as 0
    assert list(branch) == ["local"] and np.all((score > 0) & (score < 1))


def test_label_pairs() -> None:
    pairs = pd.DataFrame({"query_id": ["Q1", "Q1", "Q2", "Q9"], "reference_id": list("ABAA")})
    truth = GroundTruth([GroundTruthMatch("Q1", "B")], frozenset({"Q1", "Q2"}))
    assert label_pairs(pairs, truth).tolist() == [False, True, False, False]


# --- the rule scripts ---------------------------------------------------------------------------


def write_tables(tmp_path: Path, pairs: pd.DataFrame, name: str, parts: int = 2) -> list[str]:
    paths = []
    for i, chunk in enumerate(np.array_split(np.arange(len(pairs)), parts)):
        path = tmp_path / f"{name}{i}.pairs.csv"
        pairs.iloc[chunk].to_csv(path, index=False)
        paths.append(str(path))
    return paths


def run_fuse(tmp_path: Path, tag: str, pairs, crop_pairs=(), model=(), fusion=None):
    out = tmp_path / tag
    snakemake = SimpleNamespace(
        input=SimpleNamespace(pairs=pairs, crop_pairs=list(crop_pairs), model=list(model)),
        output=SimpleNamespace(
            predictions=str(out / "predictions.csv"), scored_pairs=str(out / "scored.csv")
        ),
        params=SimpleNamespace(fusion=fusion or {"method": "rule", "model": ""}),
        log=[str(tmp_path / f"{tag}.log")],
    )
    run_script("fuse.py", snakemake)
    return out / "predictions.csv", out / "scored.csv"


CROP_EVIDENCE = ["local_votes", "inliers", "inlier_ratio", "mean_match_distance"]


def crop_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """A crop-local pair table, with unprefixed columns as rule verify writes them."""
    crop = pairs.loc[pairs["crop_local_inliers"].notna()]
    prefixed = ["crop_local_votes", *(f"crop_local_{c}" for c in CROP_EVIDENCE[1:])]
    crop = crop.loc[:, ["query_id", "reference_id", "reference_shard", *prefixed]]
    return crop.set_axis(["query_id", "reference_id", "reference_shard", *CROP_EVIDENCE], axis=1)


def test_fuse_script_is_deterministic_under_row_order(tmp_path: Path) -> None:
    pairs = random_pairs()
    main = pairs.drop(columns=[c for c in pairs if c.startswith("crop_local_")])
    crop = crop_table(pairs)
    first = run_fuse(
        tmp_path, "a", write_tables(tmp_path, main, "a"), write_tables(tmp_path, crop, "ca")
    )
    shuffled = main.sample(frac=1.0, random_state=7)
    crop_shuffled = crop.sample(frac=1.0, random_state=8)
    second = run_fuse(
        tmp_path,
        "b",
        write_tables(tmp_path, shuffled, "b", parts=3),
        write_tables(tmp_path, crop_shuffled, "cb", parts=1),
    )
    assert first[0].read_bytes() == second[0].read_bytes()
    assert first[1].read_bytes() == second[1].read_bytes()
    predictions = pd.read_csv(first[0], dtype={"query_id": str, "reference_id": str})
    assert list(predictions.columns) == ["query_id", "reference_id", "score"]
    assert predictions.groupby("query_id").size().max() <= 10
    scored = read_scored_pairs(first[1])
    assert {"branch_local", "branch_crop_local", "branch_vlad", "crop_local_inliers"} <= set(
        scored.columns
    )
    # predictions are the scored table's top 10 per query, scores written without rounding
    top = scored.sort_values(["score", "query_id", "reference_id"], ascending=[False, True, True])
    top = top[top.groupby("query_id").cumcount() < 10]
    np.testing.assert_array_equal(predictions["score"].to_numpy(), top["score"].to_numpy())


def test_fit_then_fuse_with_the_logistic_model(tmp_path: Path) -> None:
    pairs = random_pairs(crop=False)
    signal = pairs["inliers"] + 30 * pairs["vlad_normalized"].fillna(0)
    positives = pairs.loc[signal > signal.quantile(0.8), ["query_id", "reference_id"]]
    truth = tmp_path / "truth.csv"
    positives.to_csv(truth, index=False)
    tables = write_tables(tmp_path, pairs, "p")
    model = tmp_path / "model" / "fusion.json"
    snakemake = SimpleNamespace(
        input=SimpleNamespace(pairs=tables, ground_truth=str(truth)),
        output=SimpleNamespace(model=str(model)),
        params=SimpleNamespace(fusion={"method": "logistic", "model": str(model)}),
        log=[str(tmp_path / "fit.log")],
    )
    run_script("fit_fusion.py", snakemake)
    assert json.loads(model.read_text())["format"] == "copydetect-fusion-model"
    fusion = {"method": "logistic", "model": str(model), "top_k_per_query": 3}
    predictions, scored = run_fuse(tmp_path, "fit", tables, model=[str(model)], fusion=fusion)
    scored_table = read_scored_pairs(scored)
    expected = FusionModel.from_json(model).apply(join_pair_tables([read_table(t) for t in tables]))
    np.testing.assert_allclose(scored_table["score"].to_numpy(), expected[0], rtol=0, atol=0)
    assert pd.read_csv(predictions).groupby("query_id").size().max() <= 3


def test_fuse_script_refuses_logistic_without_a_model(tmp_path: Path) -> None:
    tables = write_tables(tmp_path, random_pairs(crop=False), "p")
    with pytest.raises(ValueError, match="no fitted model"):
        run_fuse(tmp_path, "x", tables, fusion={"method": "logistic", "model": ""})
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
