rule fuse:
    """One continuous score per verified (query, reference) pair → predictions.csv."""
    input:
        pairs=query_pair_tables,
    output:
        predictions=f"{RESULTS}/predictions.csv",
    log:
        f"{RESULTS}/logs/fuse.log",
    conda:
        "../envs/cpu.yaml"
    params:
        score=config["predictions"],
    script:
        "../workflow_scripts/score_local.py"
