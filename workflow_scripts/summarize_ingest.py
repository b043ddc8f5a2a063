"""Rule summarize_ingest: merge one image set's shard counts and reject tables."""

import logging

from copydetect.rule_script import start


def main() -> None:
    from copydetect.summary import summarize_shards, write_summary

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


start(snakemake)
main()
