"""Rule embed_layout: layout global descriptors (float16) for every image of one image shard."""

import logging
import time

from copydetect.rule_script import start


def main() -> None:
    from copydetect.layout import LayoutParams, embed_layout_shard

    params = LayoutParams.from_mapping(snakemake.params.layout)
    begin = time.perf_counter()
    n_images = embed_layout_shard(snakemake.input.shard, snakemake.output.embeddings, params)
    logging.info(
        "embedded %d images (dim %d) in %.1f s", n_images, params.dim, time.perf_counter() - begin
    )


start(snakemake)
main()
