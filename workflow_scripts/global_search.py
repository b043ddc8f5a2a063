"""Rule global_search: candidates of one query embedding shard over all reference embedding
shards (exact inner-product k-NN, optional αQE, score normalization against the bank).

Both sides arrive already projected by rule project_embeddings, so only the L2 step (a no-op on
them) and the bank of the fitted normalization are used here."""

import logging
import sys
import time

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.gpu import lease_for_rule_job  # noqa: E402

# Before faiss touches CUDA: with --resources gpu=G each job gets a device of its own.
lease_for_rule_job(int(snakemake.resources.get("gpu", 0)), snakemake.params.gpu_lock_dir)

import faiss  # noqa: E402

from copydetect.global_search import GlobalSearchParams, global_candidates  # noqa: E402
from copydetect.local_search import peak_rss_mib, write_csv  # noqa: E402
from copydetect.normalization import Normalization, read_normalization  # noqa: E402
from copydetect.shards import read_embedding_shard  # noqa: E402

start = time.perf_counter()
faiss.omp_set_num_threads(max(1, snakemake.threads))
params = GlobalSearchParams.from_mapping(snakemake.params.search)
references = list(snakemake.input.references)
queries = read_embedding_shard(snakemake.input.queries)
fitted = read_normalization(snakemake.input.normalization)
normalization = Normalization.identity(bank=fitted.bank, bank_ids=fitted.bank_ids)
logging.info(
    "query shard %s (%d queries), %d reference shards, %s",
    snakemake.input.queries,
    len(queries.ids),
    len(references),
    params,
)
candidates = global_candidates(queries, references, normalization, params)
write_csv(snakemake.output.candidates, candidates)
logging.info(
    "%d candidates for %d queries, %.1f s, peak RSS %.0f MiB",
    len(candidates),
    candidates["query_id"].nunique(),
    time.perf_counter() - start,
    peak_rss_mib(),
)
