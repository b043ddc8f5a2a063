"""Rule global_search: candidates of one query embedding shard over all reference embedding
shards (exact inner-product k-NN, optional αQE, score normalization against the bank).

Both sides arrive already projected by rule project_embeddings, so only the L2 step (a no-op on
them) and the bank of the fitted normalization are used here."""

import logging
import time

from copydetect.rule_script import start


def main() -> None:
    import faiss

    from copydetect.global_search import GlobalSearchParams, global_candidates
    from copydetect.memory import peak_rss_mib
    from copydetect.normalization import Normalization, read_normalization
    from copydetect.shards import read_embedding_shard
    from copydetect.tables import write_csv

    begin = time.perf_counter()
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
        time.perf_counter() - begin,
        peak_rss_mib(),
    )


start(snakemake)
main()
