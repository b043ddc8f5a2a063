"""Rule script: ingest one shard of images into an HDF5 image shard and a rejects table."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - stays open for the whole job
logging.basicConfig(
    stream=sys.stderr,
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    force=True,
)
logging.captureWarnings(True)  # Pillow's warnings about odd files become log lines too

from copydetect.ingest import IngestError, IngestParams, ingest_shard  # noqa: E402

log = logging.getLogger("ingest_shard")


config = dict(snakemake.params.ingest)
# Rows of [id, path, fingerprint]; the fingerprint only serves Snakemake's rerun decision.
items = [(str(image_id), str(path)) for image_id, path, _ in snakemake.params.images]

try:
    summary = ingest_shard(
        items,
        snakemake.output.shard,
        snakemake.output.rejects,
        IngestParams.from_mapping(config),
        on_error=config["on_error"],
    )
except IngestError as exc:
    log.error("%s", exc)
    sys.exit(1)
log.info("%s", summary.describe())
