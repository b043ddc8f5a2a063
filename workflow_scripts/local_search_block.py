"""Rule local_search: k-NN reference descriptors of one query shard over one reference group."""

import logging
import sys
import time

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.gpu import lease_for_rule_job  # noqa: E402

# Before faiss touches CUDA: with --resources gpu=G each job gets a device of its own.
lease_for_rule_job(int(snakemake.resources.get("gpu", 0)), snakemake.params.gpu_lock_dir)

import faiss  # noqa: E402

from copydetect.local_search import (  # noqa: E402
    LocalSearchParams,
    peak_rss_mib,
    search_group,
    write_neighbors,
)

start = time.perf_counter()
faiss.omp_set_num_threads(max(1, snakemake.threads))
params = LocalSearchParams.from_mapping(snakemake.params.search)
references = list(snakemake.input.references)
logging.info(
    "query shard %s, %d reference shards, %s", snakemake.input.queries, len(references), params
)
neighbors = search_group(snakemake.input.queries, references, params)
write_neighbors(snakemake.output.neighbors, neighbors)
logging.info(
    "%d query descriptors, %d references seen, %.1f s, peak RSS %.0f MiB",
    neighbors.n,
    len(neighbors.ref_ids),
    time.perf_counter() - start,
    peak_rss_mib(),
)
