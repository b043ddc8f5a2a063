rule evaluate:
    """ISC2021 micro-AP, recall@P90 and the PR curve of predictions.csv against ground truth."""
    input:
        predictions=f"{RESULTS}/predictions.csv",
        ground_truth=config["ground_truth"] or [],
    output:
        metrics=f"{RESULTS}/eval/metrics.json",
        pr_curve=f"{RESULTS}/eval/pr_curve.png",
    log:
        f"{RESULTS}/logs/evaluate.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/evaluate.py"
