"""Rule fit_local_index: the coarse quantizer shared by every reference shard's inverted lists."""

import logging
import time

from copydetect.rule_script import start


def main() -> None:
    from copydetect.local_index import (
        LocalIndexParams,
        choose_nlist,
        fit_coarse_index,
        sample_training,
        write_coarse_index,
    )

    params = LocalIndexParams.from_mapping(snakemake.params.index)
    begin = time.perf_counter()
    sample = sample_training(
        list(snakemake.input.features), params.max_training_descriptors, params.seed
    )
    nlist = choose_nlist(params, snakemake.params.reference_images, sample.images, sample.total)
    logging.info(
        "sampled %d of %d descriptors (%d images) in %.1f s; %d cells for ~%d references",
        len(sample.descriptors),
        sample.total,
        sample.images,
        time.perf_counter() - begin,
        nlist,
        snakemake.params.reference_images,
    )
    begin = time.perf_counter()
    index = fit_coarse_index(sample.descriptors, nlist, params)
    logging.info(
        "fitted %d cells (%d iterations) in %.1f s",
        nlist,
        params.iterations,
        time.perf_counter() - begin,
    )
    write_coarse_index(snakemake.output.index, index)


start(snakemake)
main()
