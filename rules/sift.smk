rule sift:
    """OpenCV SIFT → RootSIFT uint8 descriptors for every image of one shard."""
    input:
        shard=f"{RESULTS}/images/{{set}}/{{shard}}.h5",
    output:
        features=f"{RESULTS}/sift/{{set}}/{{shard}}.h5",
        sparse=f"{RESULTS}/sift/{{set}}/{{shard}}.sparse.csv",
    log:
        f"{RESULTS}/logs/sift/{{set}}/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sift/{{set}}/{{shard}}.tsv"
    conda:
        "../envs/cpu.yaml"
    params:
        sift=config["sift"],
    script:
        "../workflow_scripts/sift_shard.py"


rule mirror_query_sift:
    """The mirrored queries' SIFT (keypoints flipped, descriptors permuted): what the local
    search of mirrored copies reads (local.mirrored_queries)."""
    input:
        features=f"{RESULTS}/sift/queries/{{shard}}.h5",
    output:
        features=f"{RESULTS}/sift/queries_mirrored/{{shard}}.h5",
    log:
        f"{RESULTS}/logs/mirror_query_sift/{{shard}}.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/mirror_sift.py"


rule mirror_sift:
    """SIFT of the left-right mirrored images of a query view (queries, crops_local), described
    from the mirrored pixels: what verification and the gallery match with verify.try_flip.
    """
    input:
        shard=f"{RESULTS}/images/{{view}}/{{shard}}.h5",
    output:
        features=f"{RESULTS}/sift/{{view}}_flipped/{{shard}}.h5",
    log:
        f"{RESULTS}/logs/mirror_sift/{{view}}/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/mirror_sift/{{view}}/{{shard}}.tsv"
    wildcard_constraints:
        view="queries|crops_local",
    conda:
        "../envs/cpu.yaml"
    params:
        sift=config["sift"],
    script:
        "../workflow_scripts/mirrored_sift_shard.py"
