"""Rule embed_vlad: VLAD global descriptors (float16) for every image of one SIFT shard."""

import logging
import sys
import time

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.vlad import VladParams, embed_sift_shard  # noqa: E402

params = VladParams.from_mapping(snakemake.params.vlad)
start = time.perf_counter()
n_images = embed_sift_shard(
    snakemake.input.features, snakemake.input.codebook, snakemake.output.embeddings, params
)
logging.info(
    "embedded %d images (dim %d) in %.1f s", n_images, params.dim, time.perf_counter() - start
)
