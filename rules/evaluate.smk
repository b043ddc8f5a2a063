rule evaluate:
    """ISC2021 micro-AP, recall@P90 and its threshold, the PR curve, each branch alone against
    the fused score, and recall by edit type when the synthesizer's edit log is given.
    """
    input:
        predictions=f"{RESULTS}/predictions.csv",
        scored_pairs=f"{RESULTS}/fuse/scored_pairs.csv",
        ground_truth=config["ground_truth"] or [],
        edits=config["edits"] or [],
    output:
        metrics=report(
            f"{RESULTS}/eval/metrics.json",
            caption="../report/metrics.rst",
            category="Evaluation",
        ),
        pr_curve=report(
            f"{RESULTS}/eval/pr_curve.png",
            caption="../report/pr_curve.rst",
            category="Evaluation",
        ),
        ablation=report(
            f"{RESULTS}/eval/ablation.csv",
            caption="../report/ablation.rst",
            category="Evaluation",
        ),
        edit_recall=report(
            f"{RESULTS}/eval/edit_recall.csv",
            caption="../report/edit_recall.rst",
            category="Evaluation",
        ),
    log:
        f"{RESULTS}/logs/evaluate.log",
    conda:
        "../envs/cpu.yaml"
    params:
        fusion=fusion_params(),
    script:
        "../workflow_scripts/evaluate.py"


rule evaluate_review:
    """The same figures against the reviewer's labels (review_labels, the gallery's export),
    on the reviewed queries only: the run as the reviewer judged it, and the score threshold
    at precision 0.9 refit from those decisions."""
    input:
        predictions=f"{RESULTS}/predictions.csv",
        review_labels=review_labels,
    output:
        metrics=report(
            f"{RESULTS}/eval/review/metrics.json",
            caption="../report/review_metrics.rst",
            category="Evaluation",
        ),
        pr_curve=report(
            f"{RESULTS}/eval/review/pr_curve.png",
            caption="../report/review_metrics.rst",
            category="Evaluation",
        ),
    log:
        f"{RESULTS}/logs/evaluate_review.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/evaluate_review.py"
