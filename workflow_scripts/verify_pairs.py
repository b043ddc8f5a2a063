"""Rule verify: ratio-test matching + RANSAC for every candidate pair of one query shard."""

import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.atomic import atomic_path  # noqa: E402
from copydetect.sift import SiftParams  # noqa: E402
from copydetect.verify import VerifyParams, read_table, verify_candidates  # noqa: E402

# Candidates name their reference shard; a SIFT shard's name is its file stem.
reference_paths = {Path(path).stem: path for path in snakemake.input.reference_features}
pairs = verify_candidates(
    read_table(snakemake.input.candidates),
    query_sift_path=snakemake.input.query_features,
    query_image_path=snakemake.input.query_images,
    reference_sift_paths=reference_paths,
    params=VerifyParams.from_mapping(snakemake.params.verify),
    sift_params=SiftParams.from_mapping(snakemake.params.sift),
    processes=snakemake.threads,
)
with atomic_path(snakemake.output.pairs) as tmp:
    pairs.to_csv(tmp, index=False)
