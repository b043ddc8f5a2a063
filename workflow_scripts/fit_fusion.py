"""Rule fit_fusion: a monotone logistic fusion model fitted on labeled pairs.

Inputs: a labeled development run's ``pairs`` (pair tables), optionally ``crop_pairs``, and its
``ground_truth`` (``query_id,reference_id``); and, when ``review_labels`` is configured, this
run's own pair tables (``review_pairs``, ``review_crop_pairs``) and the reviewer's labels
(``review_labels``, the gallery's export), of which only the reviewed queries' rows are used.
Either source may be absent, not both. Output ``model`` (JSON, read by rule fuse with
``fusion.method: logistic``).
"""

import logging

from copydetect.rule_script import start


def main() -> None:
    from copydetect.fusion import (
        FusionParams,
        fit_logistic_groups,
        join_pair_tables,
        label_pairs,
    )
    from copydetect.metrics import read_ground_truth
    from copydetect.review import read_review_labels, reviewed_pairs
    from copydetect.rule_inputs import input_files, optional_file
    from copydetect.tables import read_table

    def joined(pairs: str, crop_pairs: str):
        return join_pair_tables(
            [read_table(path) for path in input_files(snakemake.input, pairs)],
            [read_table(path) for path in input_files(snakemake.input, crop_pairs)],
        )

    FusionParams.from_mapping(snakemake.params.fusion)  # checks the section the fit is for
    groups = []
    development_truth = optional_file(snakemake.input, "ground_truth")
    if development_truth:
        pairs = joined("pairs", "crop_pairs")
        groups.append((pairs, label_pairs(pairs, read_ground_truth(development_truth))))
    review_labels = optional_file(snakemake.input, "review_labels")
    if review_labels:
        labels = read_review_labels(review_labels)
        groups.append(reviewed_pairs(joined("review_pairs", "review_crop_pairs"), labels))
    if not groups:
        raise ValueError("fit_fusion needs a development run's ground truth or review labels")
    logging.info("fitting on %d labeled run(s)", len(groups))
    model = fit_logistic_groups(groups)
    model.to_json(snakemake.output.model)


start(snakemake)
main()
