"""Rule project_embeddings: apply a model's fitted PCA-whitening (+ L2) to one embedding shard.

Done once per shard so the searches read small projected vectors (e.g. 256-d instead of VLAD's
8192-d) and never repeat the projection for every query shard."""

import logging

from copydetect.rule_script import start


def main() -> None:
    from copydetect.normalization import read_normalization
    from copydetect.shards import read_embedding_shard, write_embedding_shard

    normalization = read_normalization(snakemake.input.normalization)
    raw = read_embedding_shard(snakemake.input.embeddings)
    projected = normalization.apply(raw.vectors)
    write_embedding_shard(snakemake.output.projected, raw.ids, projected, dim=projected.shape[1])
    logging.info(
        "%d vectors projected %d → %d", len(raw.ids), raw.vectors.shape[1], projected.shape[1]
    )


start(snakemake)
main()
