rule fuse:
    """One continuous, calibrated score per (query, reference) from the evidence of every branch
    that ran → predictions.csv and the scored pair table."""
    input:
        pairs=query_pair_tables,
        crop_pairs=crop_pair_tables,
        model=fusion_model,
    output:
        predictions=f"{RESULTS}/predictions.csv",
        scored_pairs=f"{RESULTS}/fuse/scored_pairs.csv",
    log:
        f"{RESULTS}/logs/fuse.log",
    conda:
        "../envs/cpu.yaml"
    params:
        fusion=config["fusion"],
    script:
        "../workflow_scripts/fuse.py"
