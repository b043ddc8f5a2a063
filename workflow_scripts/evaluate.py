"""Snakemake script: score the predictions against the ground truth (ISC2021 matching track).

Writes ``metrics.json`` (micro-AP, recall at P90 and its score threshold ``threshold_at_p90``,
recall at rank 1/10, counts), the precision-recall curve (PNG), ``ablation.csv`` (the fusion and
each branch alone, under the same top-k and cap as the predictions) and ``edit_recall.csv``
(recall by edit type when the synthesizer's edit log is an input; the ``all`` rows otherwise).
"""

import json
import logging

from copydetect.rule_script import start


def main() -> None:
    from copydetect.ablation import ablation_table, evaluate_each, ranked_predictions
    from copydetect.atomic import atomic_path
    from copydetect.evaluation import edit_recall, read_edits
    from copydetect.fusion import FusionParams, read_scored_pairs
    from copydetect.metrics import (
        deduplicate,
        evaluate,
        plot_pr_curve,
        precision_recall_curve,
        read_ground_truth,
        read_predictions,
    )
    from copydetect.rule_inputs import input_files
    from copydetect.tables import write_csv

    # Deduplicated once here so the metrics and the curve agree and the warning is logged once.
    predictions = deduplicate(read_predictions(snakemake.input.predictions))
    ground_truth = read_ground_truth(snakemake.input.ground_truth)
    logging.info(
        "%d distinct predictions, %d ground-truth pairs over %d queries",
        len(predictions),
        len(ground_truth.matches),
        len(ground_truth.query_ids),
    )
    unlisted = sum(p.query not in ground_truth.query_ids for p in predictions)
    if unlisted:
        logging.warning(
            "%d predictions name queries absent from the ground truth (negatives)", unlisted
        )

    metrics = evaluate(ground_truth.matches, predictions, ground_truth.query_ids)
    for key, value in metrics.to_dict().items():
        logging.info("%s = %s", key, value)

    with atomic_path(snakemake.output.metrics) as tmp:
        tmp.write_text(json.dumps(metrics.to_dict(), sort_keys=True, indent=2) + "\n")

    precision, recall, _ = precision_recall_curve(ground_truth.matches, predictions)
    title = f"micro-AP {metrics.micro_ap:.4f}, recall@P90 {metrics.recall_at_p90:.4f}"
    plot_pr_curve(precision, recall, snakemake.output.pr_curve, title)

    scored_pairs = input_files(snakemake.input, "scored_pairs")
    if scored_pairs:  # the per-branch tables need the fused pair table of rule fuse
        fusion = FusionParams.from_mapping(snakemake.params.fusion)
        ranked = ranked_predictions(
            read_scored_pairs(scored_pairs[0]), fusion.top_k_per_query, fusion.max_predictions
        )
        by_branch = evaluate_each(ranked, ground_truth)
        ablation = ablation_table(by_branch)
        logging.info("each branch alone:\n%s", ablation.to_string(index=False))
        write_csv(snakemake.output.ablation, ablation)
        edit_logs = input_files(snakemake.input, "edits")
        edits = read_edits(edit_logs[0]) if edit_logs else None
        write_csv(snakemake.output.edit_recall, edit_recall(ground_truth, ranked, by_branch, edits))


start(snakemake)
main()
