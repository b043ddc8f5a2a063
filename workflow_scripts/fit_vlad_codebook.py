"""Rule fit_vlad_codebook: k-means codebook of RootSIFT for VLAD, on a seeded descriptor sample."""

import logging
import sys
import time

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.vlad import VladParams, fit_codebook, sample_descriptors, write_codebook  # noqa: E402

params = VladParams.from_mapping(snakemake.params.vlad)
paths = list(snakemake.input.features)
start = time.perf_counter()
sample = sample_descriptors(paths, params.max_training_descriptors, params.seed)
logging.info(
    "sampled %d descriptors from %d SIFT shards in %.1f s",
    len(sample),
    len(paths),
    time.perf_counter() - start,
)
start = time.perf_counter()
centroids = fit_codebook(sample, params)
logging.info(
    "fitted %d centroids (%d iterations) in %.1f s",
    params.codebook_size,
    params.iterations,
    time.perf_counter() - start,
)
write_codebook(snakemake.output.codebook, centroids, params, n_training=len(sample))
