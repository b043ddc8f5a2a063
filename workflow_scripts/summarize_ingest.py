"""Rule summarize_ingest: merge one image set's shard counts and reject tables."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.summary import summarize_shards, write_summary  # noqa: E402

summary = summarize_shards(
    snakemake.input.shards,
    snakemake.input.rejects,
    snakemake.output.rejects,
    snakemake.params.listing_rejects,
)
write_summary(summary, snakemake.output.summary)
logging.info(
    "%s: %d images in %d shards, %d rejected %s",
    snakemake.wildcards.set,
    summary.n_images,
    summary.n_shards,
    summary.n_rejected,
    summary.reasons,
)
