"""Rule local_candidates: merge one query shard's neighbours over all reference groups, count
1-NN votes per (query, reference) and keep the best references per query as candidates."""

import logging
import time

from copydetect.rule_script import start


def main() -> None:
    from copydetect.local_search import (
        CandidateParams,
        LocalSearchParams,
        QueryLayout,
        VoteParams,
        count_votes,
        merge_neighbors,
        read_neighbors,
        select_candidates,
    )
    from copydetect.memory import peak_rss_mib
    from copydetect.shards import read_sift_shard
    from copydetect.tables import write_csv

    begin = time.perf_counter()
    search = LocalSearchParams.from_mapping(snakemake.params.search)
    votes_params = VoteParams.from_mapping(snakemake.params.votes)
    options = CandidateParams.from_mapping(snakemake.params.candidates)
    layout = QueryLayout.from_features(read_sift_shard(snakemake.input.queries))
    # A generator: files are read one at a time while folding, so memory does not grow with |R|.
    neighbors = merge_neighbors((read_neighbors(p) for p in snakemake.input.neighbors), search.k)
    votes = count_votes(layout, neighbors, votes_params)
    candidates = select_candidates(votes, options.candidates_per_query, options.min_votes)
    write_csv(snakemake.output.votes, votes)
    write_csv(snakemake.output.candidates, candidates)
    logging.info(
        "%d queries, %d neighbour files, %d voted pairs, %d candidates for %d queries, %.1f s, "
        "peak RSS %.0f MiB",
        len(layout.ids),
        len(snakemake.input.neighbors),
        len(votes),
        len(candidates),
        candidates["query_id"].nunique(),
        time.perf_counter() - begin,
        peak_rss_mib(),
    )


start(snakemake)
main()
