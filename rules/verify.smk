rule verify:
    """Ratio-test matching + RANSAC for every candidate pair of one query shard."""
    input:
        candidates=query_candidate_tables,
        query_features=f"{RESULTS}/sift/queries/{{shard}}.h5",
        query_images=f"{RESULTS}/images/queries/{{shard}}.h5",
        reference_features=reference_sift_shards,
    output:
        pairs=f"{RESULTS}/verify/{{shard}}.pairs.csv",
    log:
        f"{RESULTS}/logs/verify/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/verify/{{shard}}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 8
    params:
        branches=candidate_branches(),
        verify=config["verify"],
        sift=config["sift"],
    script:
        "../workflow_scripts/verify_pairs.py"
