"""Rule embed_vlad: VLAD global descriptors (float16) for every image of one SIFT shard."""

import logging
import time

from copydetect.rule_script import start


def main() -> None:
    from copydetect.vlad import VladParams, embed_sift_shard

    params = VladParams.from_mapping(snakemake.params.vlad)
    begin = time.perf_counter()
    n_images = embed_sift_shard(
        snakemake.input.features, snakemake.input.codebook, snakemake.output.embeddings, params
    )
    logging.info(
        "embedded %d images (dim %d) in %.1f s", n_images, params.dim, time.perf_counter() - begin
    )


start(snakemake)
main()
