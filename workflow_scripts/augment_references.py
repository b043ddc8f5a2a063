"""Rule augment_references: database-side augmentation (DBA) of one reference shard."""

import logging

from copydetect.rule_script import start


def main() -> None:
    import faiss

    from copydetect.global_search import augment_references
    from copydetect.shards import read_embedding_shard, write_embedding_shard

    faiss.omp_set_num_threads(max(1, snakemake.threads))
    shard = read_embedding_shard(snakemake.input.shard)
    dba = snakemake.params.dba
    augmented = augment_references(
        shard, list(snakemake.input.references), dba["k"], dba["alpha"], dba["use_gpu"]
    )
    write_embedding_shard(snakemake.output.augmented, shard.ids, augmented, dim=augmented.shape[1])
    logging.info("%d references augmented with their top-%d neighbours", len(shard.ids), dba["k"])


start(snakemake)
main()
