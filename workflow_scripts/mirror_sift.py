"""Rule mirror_sift: SIFT of the left-right mirrored images of one query shard, described from
the mirrored pixels (what the local search of the mirrored queries, verification and the gallery
read)."""

from copydetect.rule_script import start


def main() -> None:
    from copydetect.memory import keep_freed_memory
    from copydetect.sift import SiftParams, sift_shard

    keep_freed_memory()  # image-sized buffers freed per image: no page faults for each

    params = SiftParams.from_mapping(snakemake.params.sift)
    sift_shard(snakemake.input.shard, snakemake.output.features, params, mirrored=True)


start(snakemake)
main()
