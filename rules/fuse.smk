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
    synthesizer made from the training set), never on the evaluation ground truth."""
    input:
        pairs=development_pair_tables("queries"),
        crop_pairs=development_pair_tables("crops_local"),
        ground_truth=development_ground_truth,
        development=development_run_folder,
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


rule development_run:
    """A labeled development set synthesized from the training images, and the workflow run on
    it (same models and branches) in a folder of its own: what fit_fusion learns from.
    """
    output:
        development=directory(f"{RESULTS}/development"),
    log:
        f"{RESULTS}/logs/development_run.log",
    benchmark:
        f"{RESULTS}/benchmarks/development_run.tsv"
    conda:
        "../envs/gpu.yaml"
    threads: workflow.cores
    params:
        development=config["fusion"]["development"],
        training=training_source(),
        snakefile=str(Path(workflow.basedir) / "Snakefile"),
    script:
        "../workflow_scripts/development_run.py"
