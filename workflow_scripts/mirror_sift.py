"""Rule mirror_query_sift: the SIFT shard of the left-right mirrored queries, derived from the
queries' own SIFT shard (a keypoint flip and a descriptor permutation, no new detection), so the
local search can vote for references that a query copies mirrored."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.shards import read_sift_shard, write_sift_shard  # noqa: E402
from copydetect.sift import mirror_features  # noqa: E402

features = [mirror_features(f) for f in read_sift_shard(snakemake.input.features)]
write_sift_shard(snakemake.output.features, features)
logging.info("%d mirrored queries", len(features))
