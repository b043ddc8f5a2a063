"""Pure helpers of benchmarks/local_scale.py: padding data, shard layout, recall, the 1M plan."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import local_scale as ls  # noqa: E402

from copydetect.shards import SiftFeatures  # noqa: E402


def base_image(seed: int = 0, n: int = 200) -> SiftFeatures:
    rng = np.random.default_rng(seed)
    x = rng.gamma(0.6, 20.0, (n, 128))
    desc = np.rint(255 * x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.uint8)
    points = (rng.random((n, 4)) * [300, 300, 20, 360]).astype(np.float32)
    return SiftFeatures("T000001", points, desc, (300, 300))


def test_padding_image_is_deterministic_and_depends_only_on_its_number() -> None:
    base = base_image()
    spec = ls.padding_spec(1234, 7)
    a = ls.padding_image(base, spec, seed=0, sigma=4.0)
    b = ls.padding_image(base, spec, seed=0, sigma=4.0)
    assert a.id == "P0001234"
    np.testing.assert_array_equal(a.descriptors, b.descriptors)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    other = ls.padding_image(base, ls.padding_spec(1235, 7), seed=0, sigma=4.0)
    assert not np.array_equal(a.descriptors[:10], other.descriptors[:10])
    assert not np.array_equal(
        a.descriptors, ls.padding_image(base, spec, seed=1, sigma=4.0).descriptors
    )


def test_padding_keeps_a_subset_of_the_image_near_its_transformed_descriptors() -> None:
    base = base_image()
    spec = ls.PaddingSpec(5, 0, transform=3, variant=0)
    img = ls.padding_image(base, spec, seed=0, sigma=4.0)
    assert 0.6 * len(base.descriptors) <= len(img.descriptors) <= len(base.descriptors)
    assert len(img.keypoints) == len(img.descriptors) and img.descriptors.dtype == np.uint8
    norms = np.linalg.norm(img.descriptors.astype(float), axis=1)
    assert np.all(np.abs(norms - 255) < 3)  # RootSIFT norm kept
    # Each padding row lies near its transformed base row: noise ≈ 4·√128 ≈ 45 ≪ 255.
    clean = ls.dihedral(base.descriptors, 3).astype(float)
    d = np.sqrt(((img.descriptors[:, None, :].astype(float) - clean[None]) ** 2).sum(-1))
    assert np.median(d.min(axis=1)) < 70
    assert np.median(d.min(axis=1)) > 5  # and it is jittered


def test_dihedral_is_a_group_action() -> None:
    desc = base_image().descriptors
    np.testing.assert_array_equal(ls.dihedral(desc, 0), desc)
    four_turns = desc
    for _ in range(4):
        four_turns = ls.dihedral(four_turns, 1)
    np.testing.assert_array_equal(four_turns, desc)
    np.testing.assert_array_equal(ls.dihedral(ls.dihedral(desc, 4), 4), desc)
    assert not np.array_equal(ls.dihedral(desc, 1), desc)


def test_padding_spec_visits_every_base_and_transform_before_repeating() -> None:
    specs = [ls.padding_spec(i, 5) for i in range(5 * 8)]
    assert {(s.base, s.transform) for s in specs} == {(b, t) for b in range(5) for t in range(8)}
    assert all(s.variant == 0 for s in specs)
    assert ls.padding_spec(40, 5).variant == 1


def test_shard_plans_prefix_and_spread() -> None:
    small = ls.shard_plans(10, 40, 8, spread=2)
    large = ls.shard_plans(10, 80, 8, spread=2)
    assert large[: len(small)] == small  # the smaller set is a prefix of the larger one
    assert sorted(r for p in large for r in p.references) == list(range(10))
    assert [len(p.references) for p in large[:3]] == [5, 5, 0]
    assert all(len(p.references) + len(p.padding) == 8 for p in large)
    padding = [n for p in large for n in p.padding]
    assert padding == list(range(len(padding)))
    with pytest.raises(ValueError):
        ls.shard_plans(10, 41, 8, spread=2)


def test_candidate_recall_and_sample() -> None:
    gt = pd.DataFrame(
        {"query_id": ["Q0", "Q1", "Q2", "Q3"], "reference_id": ["R1", "", "R2", "R3"]}
    )
    truth = ls.sample_truth(gt, 10)
    assert truth == {"Q0": "R1", "Q2": "R2", "Q3": "R3"}
    assert ls.sample_truth(gt, 2) == ls.sample_truth(gt, 2)
    cands = pd.DataFrame(
        {"query_id": ["Q0", "Q0", "Q2", "Q3"], "reference_id": ["R9", "R1", "R3", "R2"]}
    )
    assert ls.candidate_recall(cands, truth) == pytest.approx(1 / 3)


def test_plan_counts_jobs_and_hours() -> None:
    plan = ls.Plan(
        references=1_000_000,
        ref_per_image=600,
        queries=50_000,
        query_per_image=600,
        shard_size=2000,
        query_shard_size=1000,
        group=16,
        nlist=32768,
        runs_per_job=6,
        fit_cpu_s=3600,
        index_job_s=12.0,
        assign_job_s=30.0,
        search_job_s=100.0,
        candidates_job_s=5.0,
    )
    assert (plan.ref_shards, plan.query_shards, plan.groups) == (500, 50, 32)
    hours = plan.cpu_hours()
    assert hours["fit_local_index"] == pytest.approx(1.0)
    assert hours["index_local_shard"] == pytest.approx(500 * 12 / 3600)
    assert hours["assign_local_cells"] == pytest.approx(50 * 30 / 3600)
    assert hours["local_search"] == pytest.approx(50 * 32 * 100 / 3600)
    assert hours["local_candidates"] == pytest.approx(50 * 5 / 3600)


def test_search_cost_model_recovers_its_coefficients() -> None:
    def run(shards: int, q: int, runs: int, scanned: float) -> ls.JobRun:
        cpu = 3 + 0.5 * shards + 8e-6 * q * runs + 1.4e-8 * q * scanned
        return ls.JobRun("s", 0, cpu, cpu, 100, shards, q, runs, scanned)

    jobs = [
        run(16, 100_000, 3, 8000.0),
        run(2, 100_000, 1, 1000.0),
        run(1, 100_000, 1, 500.0),
        run(1, 1000, 1, 500.0),
        run(16, 1000, 3, 8000.0),
        run(5, 100_000, 1, 6000.0),
    ]
    model = ls.search_cost_model(jobs)
    assert model["overhead"] == pytest.approx(3)
    assert model["per_shard"] == pytest.approx(0.5)
    assert model["per_qdesc_run"] == pytest.approx(8e-6)
    assert model["per_scanned"] == pytest.approx(1.4e-8)
    assert ls.search_job_cpu(model, 16, 100_000, 3, 8000.0) == pytest.approx(jobs[0].cpu_s)


def test_job_layout_counts_runs_and_scanned_descriptors() -> None:
    from copydetect.local_search import RUN_DESCRIPTORS

    half = RUN_DESCRIPTORS // 2
    sizes = [half] * 4 + [600_000]
    assert ls.job_layout(range(0, 4), sizes, nprobe=8, nlist=1000) == (4, 2, 8 * 4 * half / 1000)
    assert ls.job_layout(range(4, 5), sizes, nprobe=8, nlist=1000) == (1, 1, 8 * 600.0)
