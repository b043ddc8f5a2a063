"""Rule assign_local_cells: the coarse cells each descriptor of one query shard scans."""

import logging
import time

from copydetect.rule_script import start


def main() -> None:
    import faiss

    from copydetect.local_search import (
        LocalSearchParams,
        assign_cells,
        stack_query_descriptors,
        write_cells,
    )
    from copydetect.memory import peak_rss_mib

    begin = time.perf_counter()
    faiss.omp_set_num_threads(max(1, snakemake.threads))
    params = LocalSearchParams.from_mapping(snakemake.params.search)
    query_desc = stack_query_descriptors(snakemake.input.queries)
    cells = assign_cells(query_desc, snakemake.input.coarse, params.nprobe)
    write_cells(snakemake.output.cells, cells)
    logging.info(
        "%d query descriptors, %d of %d cells each, %.1f s, peak RSS %.0f MiB",
        len(query_desc),
        cells.nprobe,
        cells.nlist,
        time.perf_counter() - begin,
        peak_rss_mib(),
    )


start(snakemake)
main()
