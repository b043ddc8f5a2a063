"""The overlay-crop branches on the wallpaper/Tux Paint benchmark: with and without them.

Reads a finished run made with ``overlay.detector: train`` (``benchmarks/accuracy.py --run-dir
benchmarks/work/bench_run_overlay --set overlay=...``), and fuses its pair tables twice: as they
are, and without the crop branches. "Without" drops the crop columns and the pairs that only a
crop branch proposed — exactly the pairs a run without the crop branches would verify (each
pair is verified on its own, so the others keep their evidence). Writes micro-AP, recall@P90
and the recall of overlay-edited copies both ways, each branch alone (``results/eval/
ablation.csv``), the detector's validation metrics and how often it kept a crop, into its own
section of ``benchmarks/results.md``.

    .venv/bin/python benchmarks/overlay.py [--run-dir benchmarks/work/bench_run_overlay]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml
from results_file import replace_section

from copydetect.ablation import ranked_predictions
from copydetect.evaluation import edit_recall, read_edits
from copydetect.fusion import FusionParams, join_pair_tables, score_pairs
from copydetect.metrics import GroundTruth, Metrics, evaluate, read_ground_truth
from copydetect.tables import read_table

ROOT = Path(__file__).resolve().parents[1]

WORK = ROOT / "benchmarks" / "work"
HEADING = "## Overlay-crop branches on the wallpaper/Tux Paint benchmark (benchmarks/overlay.py)"


def pair_tables(run_dir: Path, view: str) -> list[pd.DataFrame]:
    return [read_table(p) for p in sorted((run_dir / "results" / "verify" / view).glob("*.csv"))]


def without_crop_branches(table: pd.DataFrame) -> pd.DataFrame:
    """The pairs a run without crop branches verifies, with their non-crop columns.

    A pair was proposed by a local search when it has its ``*_votes`` (``local_votes``,
    ``local_mirrored_votes``), by a global model ``m`` when it has ``m_rank``; crop-global
    models are the ``crop_*`` ones.
    """
    proposed_by = [
        c for c in table.columns if c.endswith(("_votes", "_rank")) and not c.startswith("crop_")
    ]
    kept = table[table[proposed_by].notna().any(axis=1)]
    return kept.drop(columns=[c for c in table.columns if c.startswith("crop_")])


def fused_rankings(run_dir: Path, params: FusionParams) -> tuple[dict[str, list], dict[str, list]]:
    """Rankings (fused and each branch alone) with and without the crop branches."""
    tables, crops = pair_tables(run_dir, "queries"), pair_tables(run_dir, "crops_local")
    with_crops = score_pairs(join_pair_tables(tables, crops), params)
    plain = [without_crop_branches(t) for t in tables]
    without = score_pairs(join_pair_tables(plain, []), params)
    top_k, cap = params.top_k_per_query, params.max_predictions
    return ranked_predictions(with_crops, top_k, cap), ranked_predictions(without, top_k, cap)


def metrics_of(rankings: dict[str, list], truth: GroundTruth) -> dict[str, Metrics]:
    return {name: evaluate(truth.matches, p, truth.query_ids) for name, p in rankings.items()}


def detection_counts(
    run_dir: Path, edits: dict[str, tuple[str, ...]], truth: GroundTruth
) -> pd.DataFrame:
    """Share of queries given a global / local crop, for copies with and without an overlay
    edit and for distractors (which may be edited too, but copy no reference)."""
    detect_dir = run_dir / "results" / "detect"
    detections = pd.concat(
        [pd.read_csv(p, dtype={"query_id": str}) for p in sorted(detect_dir.glob("*.csv"))]
    )
    copies = {m.query for m in truth.matches}

    def kind(query: str) -> str:
        if query not in copies:
            return "distractor"
        return "overlay copy" if "overlay" in edits.get(query, ()) else "other copy"

    detections["kind"] = detections["query_id"].map(kind)
    grouped = detections.groupby("kind")
    return pd.DataFrame(
        {
            "queries": grouped.size(),
            "global crop": grouped["global_crop"].mean(),
            "local crop": grouped["local_crop"].mean(),
        }
    )


def _row(name: str, m: Metrics) -> str:
    threshold = "—" if m.threshold_at_p90 is None else f"{m.threshold_at_p90:.4f}"
    return (
        f"| {name} | {m.micro_ap:.4f} | {m.recall_at_p90:.4f} | {threshold} "
        f"| {m.recall_at_rank1:.4f} |"
    )


def cpu_exercise_lines(exercise_dir: Path) -> list[str]:
    """The detector of ``config/overlay_cpu.yaml`` on the demo (its run folder), if present."""
    metrics_file = exercise_dir / "results" / "overlay" / "detector_metrics.json"
    if not metrics_file.exists():
        return []
    m = json.loads(metrics_file.read_text())
    return [
        "CPU exercise (`snakemake --cores 2 --configfile config/demo.yaml "
        "config/overlay_cpu.yaml`: train → detect → crop branches on the demo): "
        f"{m['train_images']} training / {m['val_images']} validation overlays of "
        f"{m['image_size']} px, {m['epochs_run']} epochs in {m['seconds']:.0f} s on "
        f"{m['device']}: mAP50 **{m['map50']:.3f}**, mAP50-95 {m['map50_95']:.3f} on the "
        "held-out synthetic overlays. No GPU was lent to this task: the default recipe "
        "(2000 × 640 px, 100 epochs, YOLOv8n) has not been run.",
        "",
    ]


def render(run_dir: Path, bench: Path, params: FusionParams, exercise_dir: Path) -> str:
    truth = read_ground_truth(bench / "ground_truth.csv")
    edits = read_edits(bench / "edits.csv")
    with_crops, without = fused_rankings(run_dir, params)
    m_with, m_without = metrics_of(with_crops, truth), metrics_of(without, truth)
    recall = edit_recall(
        truth,
        {"with crops": with_crops["fused"], "without crops": without["fused"]},
        {"with crops": m_with["fused"], "without crops": m_without["fused"]},
        edits,
    )
    overlay = recall[recall["edit"].isin(["overlay", "all"])]
    detector = json.loads((run_dir / "results" / "overlay" / "detector_metrics.json").read_text())
    config = yaml.safe_load((run_dir / "benchmark-config.yaml").read_text())
    lines = [
        HEADING,
        "",
        f"Run folder: `{run_dir.relative_to(ROOT)}`; overlay settings: "
        f"`{json.dumps(config.get('overlay', {}), sort_keys=True)}`.",
        "",
        f"Detector (trained on CPU in the run, {detector['seconds']:.0f} s, "
        f"{detector['train_images']} training / {detector['val_images']} validation overlays "
        f"of {detector['image_size']} px): mAP50 **{detector['map50']:.3f}**, "
        f"mAP50-95 {detector['map50_95']:.3f}, precision {detector['precision']:.3f}, "
        f"recall {detector['recall']:.3f} on the held-out synthetic overlays.",
        "",
        *cpu_exercise_lines(exercise_dir),
        "| fused score | micro-AP | recall@P90 | threshold@P90 | recall@1 |",
        "|---|---|---|---|---|",
        _row("with the crop branches", m_with["fused"]),
        _row("without them", m_without["fused"]),
        "",
        "Each branch alone (same top-k budget), run with the crop branches:",
        "",
        "| branch | micro-AP | recall@P90 | threshold@P90 | recall@1 |",
        "|---|---|---|---|---|",
        *(_row(name, m) for name, m in m_with.items()),
        "",
        "Recall of the copies whose edit chain contains an overlay (fused score):",
        "",
        overlay.to_markdown(index=False, floatfmt=".4f"),
        "",
        "Crops kept by the detector (share of queries):",
        "",
        detection_counts(run_dir, edits, truth).to_markdown(floatfmt=("", ".0f", ".3f", ".3f")),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=WORK / "bench_run_overlay")
    parser.add_argument("--bench", type=Path, default=WORK / "bench")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.md")
    parser.add_argument(
        "--cpu-exercise", type=Path, default=ROOT, help="run folder of config/overlay_cpu.yaml"
    )
    args = parser.parse_args(argv)
    config = yaml.safe_load((args.run_dir / "benchmark-config.yaml").read_text())
    params = FusionParams.from_mapping(config.get("fusion"))
    section = render(args.run_dir.resolve(), args.bench, params, args.cpu_exercise)
    replace_section(args.results, HEADING, section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
