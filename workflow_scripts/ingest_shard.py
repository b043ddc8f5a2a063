"""Rule script: ingest one shard of images into an HDF5 image shard and a rejects table."""

import logging

from copydetect.rule_script import exit_cleanly_on, start


def shard_items() -> list[tuple[str, str]]:
    """(id, path) of this shard's images: the table the rule planned (rows of [id, path,
    fingerprint]; the fingerprint only serves Snakemake's rerun decision), or, for a set made
    in this run, its shard listed now."""
    from copydetect.inputs import list_shard

    listed = snakemake.params.development_shard
    if listed:
        entries = list_shard(
            listed["folder"], snakemake.wildcards.set, listed["shard"], int(listed["n_shards"])
        )
        return [(e.id, e.path) for e in entries]
    return [(str(image_id), str(path)) for image_id, path, _ in snakemake.params.images]


def main() -> None:
    from copydetect.ingest import IngestError, IngestParams, ingest_shard
    from copydetect.inputs import ImageSetError

    config = dict(snakemake.params.ingest)
    with exit_cleanly_on(IngestError, ImageSetError):
        items = shard_items()
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
