"""Rule index_local_shard: one reference shard's inverted lists against the coarse quantizer."""

import logging
import time

from copydetect.rule_script import start


def main() -> None:
    from copydetect.local_index import build_shard_index, write_shard_index
    from copydetect.memory import peak_rss_mib

    begin = time.perf_counter()
    shard = build_shard_index(snakemake.input.coarse, snakemake.input.features)
    write_shard_index(snakemake.output.index, shard)
    logging.info(
        "%d images, %d descriptors indexed in %.1f s, peak RSS %.0f MiB",
        len(shard.ids),
        shard.n_descriptors,
        time.perf_counter() - begin,
        peak_rss_mib(),
    )


start(snakemake)
main()
