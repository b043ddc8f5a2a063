"""Rule sift: SIFT keypoints + uint8 RootSIFT descriptors for every image of one shard."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.sift import SiftParams, sift_shard, write_sparse_table  # noqa: E402

params = SiftParams.from_mapping(snakemake.params.sift)
summary = sift_shard(snakemake.input.shard, snakemake.output.features, params)
write_sparse_table(summary, snakemake.output.sparse)
if summary.n_sparse:
    logging.info("sparse images (< %d keypoints): %s", params.min_keypoints, summary.sparse_ids)
