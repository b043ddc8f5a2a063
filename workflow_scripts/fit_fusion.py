"""Rule fit_fusion: a monotone logistic fusion model fitted on a labeled development run.

Inputs: ``pairs`` (that run's pair tables), optionally ``crop_pairs``, and ``ground_truth``
(``query_id,reference_id``), or ``development``, the folder of rule development_run; output
``model`` (JSON, read by rule fuse with ``fusion.method: logistic``).
"""

from pathlib import Path

from copydetect.rule_script import start


def development_inputs():
    """Pair tables, crop pair tables and ground truth: of the development run this workflow
    made (input ``development``, a folder), or of the finished run the config names."""
    from copydetect.rule_inputs import input_files

    development = input_files(snakemake.input, "development")
    if not development:
        return (
            input_files(snakemake.input, "pairs"),
            input_files(snakemake.input, "crop_pairs"),
            snakemake.input.ground_truth,
        )
    run = Path(development[0])
    verify = run / "results" / "verify"
    return (
        sorted(map(str, (verify / "queries").glob("*.pairs.csv"))),
        sorted(map(str, (verify / "crops_local").glob("*.pairs.csv"))),
        str(run / "data" / "ground_truth.csv"),
    )


def main() -> None:
    from copydetect.fusion import FusionParams, fit_logistic, join_pair_tables, label_pairs
    from copydetect.metrics import read_ground_truth
    from copydetect.tables import read_table

    FusionParams.from_mapping(snakemake.params.fusion)  # checks the section the fit is for
    pair_paths, crop_paths, ground_truth = development_inputs()
    pairs = join_pair_tables(
        [read_table(path) for path in pair_paths], [read_table(path) for path in crop_paths]
    )
    labels = label_pairs(pairs, read_ground_truth(ground_truth))
    model = fit_logistic(pairs, labels)
    model.to_json(snakemake.output.model)


start(snakemake)
main()
