"""Rule mirror_query_sift: the SIFT shard of the left-right mirrored queries, derived from the
queries' own SIFT shard (a keypoint flip and a descriptor permutation, no new detection), so the
local search can vote for references that a query copies mirrored."""

import logging

from copydetect.rule_script import start


def main() -> None:
    from copydetect.shards import read_sift_shard, write_sift_shard
    from copydetect.sift import mirror_features

    features = [mirror_features(f) for f in read_sift_shard(snakemake.input.features)]
    write_sift_shard(snakemake.output.features, features)
    logging.info("%d mirrored queries", len(features))


start(snakemake)
main()
