"""Rule fit_vlad_codebook: k-means codebook of RootSIFT for VLAD, on a seeded descriptor sample."""

import logging
import time

from copydetect.rule_script import start


def main() -> None:
    from copydetect.vlad import VladParams, fit_codebook, sample_descriptors, write_codebook

    params = VladParams.from_mapping(snakemake.params.vlad)
    paths = list(snakemake.input.features)
    begin = time.perf_counter()
    sample = sample_descriptors(paths, params.max_training_descriptors, params.seed)
    logging.info(
        "sampled %d descriptors from %d SIFT shards in %.1f s",
        len(sample),
        len(paths),
        time.perf_counter() - begin,
    )
    begin = time.perf_counter()
    centroids = fit_codebook(sample, params)
    logging.info(
        "fitted %d centroids (%d iterations) in %.1f s",
        params.codebook_size,
        params.iterations,
        time.perf_counter() - begin,
    )
    write_codebook(snakemake.output.codebook, centroids, params, n_training=len(sample))


start(snakemake)
main()
