"""Rule verify: ratio-test matching + RANSAC for every candidate pair of one query shard."""

import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.atomic import atomic_path  # noqa: E402
from copydetect.candidates import merge_candidates  # noqa: E402
from copydetect.rule_inputs import optional_file  # noqa: E402
from copydetect.verify import VerifyParams, read_table, verify_candidates  # noqa: E402

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
