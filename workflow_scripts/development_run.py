"""Rule development_run: synthesize a labeled development set from the training images and run
the workflow on it (same models and branches) up to its scored pair table; fit_fusion learns the
logistic fusion from it (see ``copydetect.development``)."""

import logging
from pathlib import Path

from copydetect.rule_script import exit_cleanly_on, start


def main() -> None:
    from copydetect.development import (
        development_config,
        development_params,
        make_development_set,
        run_development,
    )
    from copydetect.inputs import ImageSetError

    out_dir = Path(snakemake.output.development)
    out_dir.mkdir(parents=True, exist_ok=True)
    with exit_cleanly_on(ImageSetError, ValueError, RuntimeError):
        params = development_params(snakemake.params.development)
        summary = make_development_set(snakemake.params.training, out_dir / "data", params)
        logging.info("development set: %s", summary)
        config = development_config(snakemake.config, out_dir / "data")
        run_development(snakemake.params.snakefile, out_dir, config, snakemake.threads)


start(snakemake)
main()
