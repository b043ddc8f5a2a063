rule synthesize_queries:
    """Make a labeled benchmark (references, edited-copy and distractor queries, ground truth,
    edit log) from a folder of photographs. Run it as a target of its own: its outputs are the
    inputs of the main workflow, which lists its image sets before any job runs."""
    output:
        directory(config["synthesize"]["output"]),
    log:
        f"{RESULTS}/logs/synthesize_queries.log",
    conda:
        "../envs/cpu.yaml"
    params:
        synthesize=config["synthesize"],
    script:
        "../workflow_scripts/synthesize_queries.py"
