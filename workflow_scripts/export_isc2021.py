"""Rule export_isc2021: one set's embedding shards as one file in the isc2021 HDF5 layout."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.shards import export_isc2021  # noqa: E402

export_isc2021(list(snakemake.input.shards), snakemake.output.export)
logging.info("%d shards exported to %s", len(snakemake.input.shards), snakemake.output.export)
