"""Rule mirror_sift: SIFT of the left-right mirrored images of one query shard, described from
the mirrored pixels (what the local search of the mirrored queries, verification and the gallery
read)."""

from copydetect.rule_script import start


def main() -> None:
    from copydetect.sift import SiftParams, sift_shard

    params = SiftParams.from_mapping(snakemake.params.sift)
    sift_shard(snakemake.input.shard, snakemake.output.features, params, mirrored=True)


start(snakemake)
main()
