"""Rule mirror_sift: SIFT of the left-right mirrored images of one query shard (what the local
search of the mirrored queries, verification and the gallery read): the view's own SIFT mirrored
by a permutation (sift.mirror permute) or SIFT of the mirrored pixels (extract)."""

from copydetect.rule_script import start


def main() -> None:
    from copydetect.memory import keep_freed_memory
    from copydetect.sift import SiftParams, mirror_sift_shard, sift_shard

    if snakemake.params.mirror == "permute":
        mirror_sift_shard(snakemake.input.source, snakemake.output.features)
        return
    keep_freed_memory()  # image-sized buffers freed per image: no page faults for each
    params = SiftParams.from_mapping(snakemake.params.sift)
    sift_shard(snakemake.input.source, snakemake.output.features, params, mirrored=True)


start(snakemake)
main()
