"""Rule fuse (local branch): one continuous score per verified pair → predictions.csv."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.score import predictions_from_pairs, write_predictions  # noqa: E402
from copydetect.verify import read_table  # noqa: E402

options = dict(snakemake.params.score)
predictions = predictions_from_pairs(
    [read_table(path) for path in snakemake.input.pairs],
    top_k_per_query=options.get("top_k_per_query"),
    max_predictions=options.get("max_predictions"),
)
write_predictions(predictions, snakemake.output.predictions)
