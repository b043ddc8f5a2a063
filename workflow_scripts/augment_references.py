"""Rule augment_references: database-side augmentation (DBA) of one reference shard."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.gpu import lease_for_rule_job  # noqa: E402

lease_for_rule_job(int(snakemake.resources.get("gpu", 0)), snakemake.params.gpu_lock_dir)

import faiss  # noqa: E402

from copydetect.global_search import augment_references  # noqa: E402
from copydetect.shards import read_embedding_shard, write_embedding_shard  # noqa: E402

faiss.omp_set_num_threads(max(1, snakemake.threads))
shard = read_embedding_shard(snakemake.input.shard)
dba = snakemake.params.dba
augmented = augment_references(
    shard, list(snakemake.input.references), dba["k"], dba["alpha"], dba["use_gpu"]
)
write_embedding_shard(snakemake.output.augmented, shard.ids, augmented, dim=augmented.shape[1])
logging.info("%d references augmented with their top-%d neighbours", len(shard.ids), dba["k"])
