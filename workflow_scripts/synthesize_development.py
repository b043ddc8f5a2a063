"""Rule synthesize_development: a labeled development set synthesized from the training images
(``copydetect.development``); the development run's jobs of the same DAG then run on it, and
fit_fusion learns the logistic fusion from their pair tables and this ground truth."""

import logging
import shutil
from pathlib import Path

from copydetect.rule_script import exit_cleanly_on, start


def main() -> None:
    from copydetect.development import development_params, make_development_set
    from copydetect.inputs import ImageSetError

    images = Path(snakemake.output.images)
    with exit_cleanly_on(ImageSetError, ValueError):
        params = development_params(snakemake.params.development)
        summary = make_development_set(snakemake.params.training, images, params)
    logging.info("development set: %s", summary)
    # The ground truth as an output of its own: fit_fusion's input, next to the image folder.
    shutil.copyfile(images / "ground_truth.csv", snakemake.output.ground_truth)


start(snakemake)
main()
