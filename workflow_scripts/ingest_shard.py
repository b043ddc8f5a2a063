"""Rule script: ingest one shard of images into an HDF5 image shard and a rejects table."""

import logging

from copydetect.rule_script import exit_cleanly_on, start


def main() -> None:
    from copydetect.ingest import IngestError, IngestParams, ingest_shard

    config = dict(snakemake.params.ingest)
    # Rows of [id, path, fingerprint]; the fingerprint only serves Snakemake's rerun decision.
    items = [(str(image_id), str(path)) for image_id, path, _ in snakemake.params.images]
    with exit_cleanly_on(IngestError):
        summary = ingest_shard(
            items,
            snakemake.output.shard,
            snakemake.output.rejects,
            IngestParams.from_mapping(config),
            on_error=config["on_error"],
        )
    logging.info("%s", summary.describe())


start(snakemake)
main()
