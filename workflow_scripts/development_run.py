"""Rule development_run: synthesize a labeled development set from the training images and run
the workflow on it (same models and branches) up to its scored pair table; fit_fusion learns the
logistic fusion from it (see ``copydetect.development``)."""

import logging
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.development import (  # noqa: E402
    development_config,
    development_params,
    make_development_set,
    run_development,
)
from copydetect.inputs import ImageSetError  # noqa: E402

out_dir = Path(snakemake.output.development)
out_dir.mkdir(parents=True, exist_ok=True)
try:
    params = development_params(snakemake.params.development)
    summary = make_development_set(snakemake.params.training, out_dir / "data", params)
    logging.info("development set: %s", summary)
    config = development_config(snakemake.config, out_dir / "data")
    run_development(snakemake.params.snakefile, out_dir, config, snakemake.threads)
except (ImageSetError, ValueError, RuntimeError) as exc:
    logging.error("%s", exc)  # the message names the problem; no traceback needed
    sys.exit(1)
