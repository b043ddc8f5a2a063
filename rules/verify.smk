rule verify:
    """Ratio-test matching + RANSAC for every candidate pair of one query shard, with the full
    queries' features (view queries) or the local crops' (view crops_local)."""
    input:
        candidates=query_candidate_tables,
        query_features=f"{RUN}/sift/{{view}}/{{shard}}.h5",
        query_images=f"{RUN}/images/{{view}}/{{shard}}.h5",
        reference_features=reference_sift_shards,
    output:
        pairs=f"{RUN}/verify/{{view}}/{{shard}}.pairs.csv",
    log:
        f"{RUN}/logs/verify/{{view}}/{{shard}}.log",
    benchmark:
        f"{RUN}/benchmarks/verify/{{view}}/{{shard}}.tsv"
    wildcard_constraints:
        view="queries|crops_local",
    conda:
        "../envs/cpu.yaml"
    threads: 8
    params:
        branches=candidate_branches,
        verify=config["verify"],
        sift=config["sift"],
    script:
        "../workflow_scripts/verify_pairs.py"
