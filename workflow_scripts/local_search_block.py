"""Rule local_search: k-NN reference descriptors of one query shard over one reference group."""

import logging
import time

from copydetect.rule_script import start


def main() -> None:
    import faiss

    from copydetect.local_search import (
        LocalSearchParams,
        search_group,
        write_neighbors,
    )
    from copydetect.memory import peak_rss_mib

    begin = time.perf_counter()
    faiss.omp_set_num_threads(max(1, snakemake.threads))
    params = LocalSearchParams.from_mapping(snakemake.params.search)
    references = list(snakemake.input.references)
    logging.info(
        "query shard %s, %d reference shards, %s", snakemake.input.queries, len(references), params
    )
    # local.index.type: ivf names the query shard's cells (assign_local_cells); flat names none
    # (the references are SIFT shards).
    cells = list(snakemake.input.cells)
    neighbors = search_group(
        snakemake.input.queries, references, params, cells_path=cells[0] if cells else None
    )
    write_neighbors(snakemake.output.neighbors, neighbors)
    logging.info(
        "%d query descriptors, %d references seen, %.1f s, peak RSS %.0f MiB",
        neighbors.n,
        len(neighbors.ref_ids),
        time.perf_counter() - begin,
        peak_rss_mib(),
    )


start(snakemake)
main()
