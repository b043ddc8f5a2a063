"""Rule synthesize_overlay_data: a seeded YOLO dataset of pasted images for the overlay detector."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.overlay import DatasetParams, synthesize_overlay_dataset  # noqa: E402

try:
    params = DatasetParams.from_mapping(snakemake.params.dataset)
    logging.info("%s", params)
    synthesize_overlay_dataset(list(snakemake.input.shards), snakemake.output.dataset, params)
except ValueError as exc:  # bad parameters or no source image: the message says which
    logging.error("%s", exc)
    sys.exit(1)
