"""benchmarks/local_index.py: candidate recall, CPU sums and the table, on a hand-made run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import local_index as bench  # noqa: E402


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_run(root: Path, cpu: float) -> Path:
    header = "query_id,reference_id,votes\n"
    write(root / "results/search/local/queries/s0000.candidates.csv", header + "q1,r1,5\nq2,r9,3\n")
    write(root / "results/search/local/queries_mirrored/s0000.candidates.csv", header + "q3,r3,2\n")
    tsv = "s\tcpu_time\n1.0\t{}\n"
    write(root / "results/benchmarks/local_search/queries/s0000/g0000.tsv", tsv.format(cpu))
    write(root / "results/benchmarks/local_search/queries_mirrored/s0000/g0000.tsv", tsv.format(1))
    write(root / "results/benchmarks/fit_local_index.tsv", tsv.format(0.5))
    write(root / "results/eval/metrics.json", '{"micro_ap": 0.75, "recall_at_p90": 0.5}')
    log = "2026 INFO copydetect.local_search: ivf: 256 cells, 8 scanned per query descriptor\n"
    write(root / "results/logs/local_search/queries/s0000/g0000.log", log)
    return root


def test_candidate_recall_counts_either_view(tmp_path: Path) -> None:
    truth = tmp_path / "gt.csv"
    truth.write_text("query_id,reference_id\nq1,r1\nq2,r2\nq3,r3\nq4,\n")
    pairs = bench.true_pairs(truth)
    assert pairs == {("q1", "r1"), ("q2", "r2"), ("q3", "r3")}  # the distractor is no pair
    run = fake_run(tmp_path / "run", cpu=2.5)
    assert bench.candidate_recall(run, pairs) == 2 / 3
    assert bench.cpu_seconds(run, "local_search") == 3.5
    assert bench.cpu_seconds(run, "fit_local_index", "index_local_shard") == 0.5


def test_table_compares_every_row_with_the_exact_search(tmp_path: Path) -> None:
    pairs = {("q1", "r1"), ("q2", "r2"), ("q3", "r3")}
    ivf = bench.outcome(fake_run(tmp_path / "a", 2.0), bench.Variant("ivf", ()), pairs)
    exact = bench.Outcome(bench.Variant("flat (exact)", ("x",)), 0.8, 0.6, 1.0, 90.0, 0.5, "exact")
    text = bench.render([ivf, exact], tmp_path / "bench", 3, "cmd")
    assert "| ivf | 256 cells, 8 scanned per query descriptor | 0.7500 | -0.0500 |" in text
    assert "| 0.6667 | -33.3 | 3.0 | 0.5 |" in text
    assert "| flat (exact) | exact | 0.8000 | +0.0000 | 0.6000 | 1.0000 | +0.0 | 90.0 | — |" in text
