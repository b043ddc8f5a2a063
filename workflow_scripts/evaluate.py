"""Snakemake script: score ``predictions.csv`` against the ground truth (ISC2021 matching track).

Writes ``metrics.json`` (micro-AP, recall at P90 and its threshold, recall at rank 1/10, counts)
and the precision-recall curve as a PNG.
"""

import json
import logging
import sys

from copydetect.atomic import atomic_path
from copydetect.metrics import (
    deduplicate,
    evaluate,
    plot_pr_curve,
    precision_recall_curve,
    read_ground_truth,
    read_predictions,
)

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 (stays open for the whole job)
logging.basicConfig(
    stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)
log = logging.getLogger("evaluate")

# Deduplicated once here so the metrics and the curve agree and the warning is logged once.
predictions = deduplicate(read_predictions(snakemake.input.predictions))
ground_truth = read_ground_truth(snakemake.input.ground_truth)
log.info(
    "%d distinct predictions, %d ground-truth pairs over %d queries",
    len(predictions),
    len(ground_truth.matches),
    len(ground_truth.query_ids),
)
unlisted = sum(p.query not in ground_truth.query_ids for p in predictions)
if unlisted:
    log.warning("%d predictions name queries absent from the ground truth (negatives)", unlisted)

metrics = evaluate(ground_truth.matches, predictions, ground_truth.query_ids)
for key, value in metrics.to_dict().items():
    log.info("%s = %s", key, value)

with atomic_path(snakemake.output.metrics) as tmp:
    tmp.write_text(json.dumps(metrics.to_dict(), sort_keys=True, indent=2) + "\n")

precision, recall, _ = precision_recall_curve(ground_truth.matches, predictions)
title = f"micro-AP {metrics.micro_ap:.4f}, recall@P90 {metrics.recall_at_p90:.4f}"
plot_pr_curve(precision, recall, snakemake.output.pr_curve, title)
