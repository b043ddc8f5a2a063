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
        fusion=fusion_params(),
    script:
        "../workflow_scripts/fuse.py"


rule fit_fusion:
    """A monotone logistic fusion model fitted on a labeled development run (queries the
    synthesizer made from the training set, run in this DAG; or a finished run the config
    names) and, with review_labels, on this run's reviewed pairs; never on the evaluation
    ground truth."""
    input:
        pairs=development_pair_tables("queries"),
        crop_pairs=development_pair_tables("crops_local"),
        ground_truth=development_ground_truth,
        review_pairs=review_pair_tables("queries"),
        review_crop_pairs=review_pair_tables("crops_local"),
        review_labels=review_labels,
    output:
        model=f"{RESULTS}/fusion/model.json",
    log:
        f"{RESULTS}/logs/fit_fusion.log",
    conda:
        "../envs/cpu.yaml"
    params:
        fusion=fusion_params(),
    script:
        "../workflow_scripts/fit_fusion.py"


rule synthesize_development:
    """A labeled development set (references, edited copies, distractors and their ground
    truth) synthesized from the training images. The development run's jobs are the same
    per-shard rules under results/development/; their shards are planned from the set's sizes
    (development_counts), and each ingest job lists its shard of the made set."""
    output:
        images=directory(DEVELOPMENT_DATA),
        ground_truth=f"{DEVELOPMENT}/ground_truth.csv",
    log:
        f"{DEVELOPMENT}/logs/synthesize_development.log",
    benchmark:
        f"{DEVELOPMENT}/benchmarks/synthesize_development.tsv"
    conda:
        "../envs/cpu.yaml"
    params:
        development=config["fusion"]["development"],
        training=training_source(),
        training_listing=training_listing,
    script:
        "../workflow_scripts/synthesize_development.py"
