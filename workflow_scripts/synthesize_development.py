"""Rule synthesize_development: a labeled development set synthesized from the training images
(``copydetect.development``); the development run's jobs of the same DAG then run on it, and
fit_fusion learns the logistic fusion from their pair tables and this ground truth."""

import logging
import shutil
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.development import development_params, make_development_set  # noqa: E402
from copydetect.inputs import ImageSetError  # noqa: E402

images = Path(snakemake.output.images)
try:
    params = development_params(snakemake.params.development)
    summary = make_development_set(snakemake.params.training, images, params)
except (ImageSetError, ValueError) as exc:
    logging.error("%s", exc)  # the message names the problem; no traceback needed
    sys.exit(1)
logging.info("development set: %s", summary)
# The ground truth as an output of its own: fit_fusion's input, next to the image folder.
shutil.copyfile(images / "ground_truth.csv", snakemake.output.ground_truth)
