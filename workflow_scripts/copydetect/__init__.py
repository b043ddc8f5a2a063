"""Copy-detection building blocks used by the Snakemake rules in ``rules/``.

Each module is small and importable on its own; the rule scripts in ``workflow_scripts/`` only
read ``snakemake.input/output/params`` and call into these modules.
"""
