"""Rule fit_fusion: a monotone logistic fusion model fitted on a labeled development run.

Inputs: ``pairs`` (that run's pair tables), optionally ``crop_pairs``, and ``ground_truth``
(``query_id,reference_id``); output ``model`` (JSON, read by rule fuse with
``fusion.method: logistic``).
"""

from copydetect.rule_script import start


def main() -> None:
    from copydetect.fusion import FusionParams, fit_logistic, join_pair_tables, label_pairs
    from copydetect.metrics import read_ground_truth
    from copydetect.rule_inputs import input_files
    from copydetect.tables import read_table

    FusionParams.from_mapping(snakemake.params.fusion)  # checks the section the fit is for
    pairs = join_pair_tables(
        [read_table(path) for path in input_files(snakemake.input, "pairs")],
        [read_table(path) for path in input_files(snakemake.input, "crop_pairs")],
    )
    labels = label_pairs(pairs, read_ground_truth(snakemake.input.ground_truth))
    model = fit_logistic(pairs, labels)
    model.to_json(snakemake.output.model)


start(snakemake)
main()
