"""Rule mirror_sift: SIFT of the left-right mirrored images of one query shard, described from
the mirrored pixels (what the local search of the mirrored queries, verification and the gallery
read)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.sift import SiftParams, sift_shard  # noqa: E402

params = SiftParams.from_mapping(snakemake.params.sift)
sift_shard(snakemake.input.shard, snakemake.output.features, params, mirrored=True)
