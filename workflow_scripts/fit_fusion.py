"""Rule fit_fusion: a monotone logistic fusion model fitted on a labeled development run.

Inputs: ``pairs`` (that run's pair tables), optionally ``crop_pairs``, and ``ground_truth``
(``query_id,reference_id``); output ``model`` (JSON, read by rule fuse with
``fusion.method: logistic``).
"""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.fusion import FusionParams, fit_logistic, join_pair_tables, label_pairs  # noqa: E402
from copydetect.metrics import read_ground_truth  # noqa: E402
from copydetect.rule_inputs import input_files  # noqa: E402
from copydetect.verify import read_table  # noqa: E402

params = FusionParams.from_mapping(snakemake.params.fusion)
pairs = join_pair_tables(
    [read_table(path) for path in input_files(snakemake.input, "pairs")],
    [read_table(path) for path in input_files(snakemake.input, "crop_pairs")],
)
labels = label_pairs(pairs, read_ground_truth(snakemake.input.ground_truth))
model = fit_logistic(pairs, labels, l2=params.l2, rule=params.rule)
model.to_json(snakemake.output.model)
