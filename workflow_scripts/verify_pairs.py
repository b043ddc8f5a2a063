"""Rule verify: ratio-test matching + RANSAC for the candidate pairs of one query shard
(``copydetect.verify.pairs_to_verify``); every candidate row is written, with its evidence."""

import logging
from pathlib import Path

from copydetect.rule_script import start


def main() -> None:
    from copydetect.atomic import atomic_path
    from copydetect.candidates import merge_candidates
    from copydetect.rule_inputs import optional_file
    from copydetect.tables import read_table
    from copydetect.verify import VerifyParams, verify_candidates

    # Candidates name their reference shard; a SIFT shard's name is its file stem.
    reference_paths = {Path(path).stem: path for path in snakemake.input.reference_features}
    # One table per branch (local, then each global model), in the order of params.branches.
    tables = dict(zip(snakemake.params.branches, snakemake.input.candidates, strict=True))
    candidates = merge_candidates({branch: read_table(path) for branch, path in tables.items()})
    logging.info("%d candidate pairs from %s", len(candidates), ", ".join(tables))
    pairs = verify_candidates(
        candidates,
        query_sift_path=snakemake.input.query_features,
        mirrored_sift_path=optional_file(snakemake.input, "mirrored_query_features"),
        reference_sift_paths=reference_paths,
        params=VerifyParams.from_mapping(snakemake.params.verify),
        processes=snakemake.threads,
    )
    with atomic_path(snakemake.output.pairs) as tmp:
        pairs.to_csv(tmp, index=False)


start(snakemake)
main()
