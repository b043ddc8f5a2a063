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


def as_list(value: object) -> list[str]:
    # A named input holding a single file can arrive as a bare string: don't iterate its chars.
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


config = dict(snakemake.params.ingest)
paths = as_list(snakemake.input.images)
ids = as_list(snakemake.params.ids)
if len(ids) != len(paths):
    log.error("got %d ids for %d images; the rule must pass matching lists", len(ids), len(paths))
    sys.exit(1)

try:
    summary = ingest_shard(
        list(zip(ids, paths, strict=True)),
        snakemake.output.shard,
        snakemake.output.rejects,
        IngestParams.from_mapping(config),
        on_error=config.get("on_error", "skip"),
    )
except IngestError as exc:
    log.error("%s", exc)
    sys.exit(1)
log.info("%s", summary.describe())
