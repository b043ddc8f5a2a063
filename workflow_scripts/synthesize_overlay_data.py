"""Rule synthesize_overlay_data: a seeded YOLO dataset of pasted images for the overlay detector."""

import logging

from copydetect.rule_script import exit_cleanly_on, start


def main() -> None:
    from copydetect.overlay import DatasetParams, synthesize_overlay_dataset

    # Bad parameters or no source image: the message says which.
    with exit_cleanly_on(ValueError):
        params = DatasetParams.from_mapping(snakemake.params.dataset)
        logging.info("%s", params)
        synthesize_overlay_dataset(list(snakemake.input.shards), snakemake.output.dataset, params)


start(snakemake)
main()
