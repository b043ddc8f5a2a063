"""Rule fuse: every branch's evidence → one continuous score per pair → predictions.csv.

Inputs: ``pairs`` (the verified pair tables of the query shards), optionally ``crop_pairs`` (the
crop-local branch's pair tables, joined in with ``crop_local_`` columns) and ``model`` (a fitted
logistic fusion, for ``fusion.method: logistic``). Outputs: ``predictions`` (top-k per query,
capped, score descending then ids) and ``scored_pairs`` (every pair with its fused score, each
branch's own score and the evidence), both written atomically.
"""

from copydetect.rule_script import start


def main() -> None:
    from copydetect.fusion import (
        FusionModel,
        FusionParams,
        fused_predictions,
        join_pair_tables,
        score_pairs,
    )
    from copydetect.predictions import write_predictions
    from copydetect.rule_inputs import input_files
    from copydetect.tables import read_table, write_csv

    params = FusionParams.from_mapping(snakemake.params.fusion)
    model_paths = input_files(snakemake.input, "model")
    model = (
        FusionModel.from_json(model_paths[0])
        if params.method == "logistic" and model_paths
        else None
    )
    pairs = join_pair_tables(
        [read_table(path) for path in snakemake.input.pairs],
        [read_table(path) for path in input_files(snakemake.input, "crop_pairs")],
    )
    scored = score_pairs(pairs, params, model)
    write_csv(snakemake.output.scored_pairs, scored)
    write_predictions(fused_predictions(scored, params), snakemake.output.predictions)


start(snakemake)
main()
