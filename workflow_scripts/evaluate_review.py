"""Rule evaluate_review: the ISC2021 figures against the reviewer's labels.

Writes ``metrics.json`` (the keys of rule evaluate's, ``threshold_at_p90`` refit from the
decisions) and the precision-recall curve, computed on the reviewed queries only
(:mod:`copydetect.review`).
"""

import json
import logging

from copydetect.rule_script import start


def main() -> None:
    from copydetect.atomic import atomic_path
    from copydetect.metrics import (
        deduplicate,
        evaluate,
        plot_pr_curve,
        precision_recall_curve,
        read_predictions,
    )
    from copydetect.review import read_review_labels, reviewed_predictions
    from copydetect.rule_inputs import optional_file

    labels = read_review_labels(optional_file(snakemake.input, "review_labels"))
    predictions = reviewed_predictions(
        deduplicate(read_predictions(snakemake.input.predictions)), labels
    )
    logging.info(
        "%d predictions of %d reviewed queries, %d pairs marked copy",
        len(predictions),
        len(labels.query_ids),
        len(labels.matches),
    )
    metrics = evaluate(labels.matches, predictions, labels.query_ids)
    for key, value in metrics.to_dict().items():
        logging.info("%s = %s", key, value)
    with atomic_path(snakemake.output.metrics) as tmp:
        tmp.write_text(json.dumps(metrics.to_dict(), sort_keys=True, indent=2) + "\n")
    precision, recall, _ = precision_recall_curve(labels.matches, predictions)
    title = (
        f"reviewed queries: micro-AP {metrics.micro_ap:.4f}, recall@P90 {metrics.recall_at_p90:.4f}"
    )
    plot_pr_curve(precision, recall, snakemake.output.pr_curve, title)


start(snakemake)
main()
