rule verify:
    """Ratio-test matching + RANSAC for the candidate pairs of one query shard (those a local
    search proposed, and global-only ones up to verify.global_only_max_rank), with the full
    queries' features (view queries) or the local crops' (view crops_local), and those of their
    mirror images (verify.try_flip)."""
    input:
        candidates=query_candidate_tables,
        query_features=f"{RUN}/sift/{{view}}/{{shard}}.h5",
        mirrored_query_features=verified_mirror_features,
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
    script:
        "../workflow_scripts/verify_pairs.py"
