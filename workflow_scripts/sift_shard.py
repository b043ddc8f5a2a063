"""Rule sift: SIFT keypoints + uint8 RootSIFT descriptors for every image of one shard."""

import logging

from copydetect.rule_script import start


def main() -> None:
    from copydetect.memory import keep_freed_memory
    from copydetect.sift import SiftParams, sift_shard, write_sparse_table

    keep_freed_memory()  # image-sized buffers freed per image: no page faults for each

    params = SiftParams.from_mapping(snakemake.params.sift)
    summary = sift_shard(snakemake.input.shard, snakemake.output.features, params)
    write_sparse_table(summary, snakemake.output.sparse)
    if summary.n_sparse:
        logging.info("sparse images (< %d keypoints): %s", params.min_keypoints, summary.sparse_ids)


start(snakemake)
main()
