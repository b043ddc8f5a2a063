"""Rule export_isc2021: one set's embedding shards as one file in the isc2021 HDF5 layout."""

import logging

from copydetect.rule_script import start


def main() -> None:
    from copydetect.shards import export_isc2021

    export_isc2021(list(snakemake.input.shards), snakemake.output.export)
    logging.info("%d shards exported to %s", len(snakemake.input.shards), snakemake.output.export)


start(snakemake)
main()
