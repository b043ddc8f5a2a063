rule sift:
    """OpenCV SIFT → RootSIFT uint8 descriptors for every image of one shard."""
    input:
        shard=f"{RUN}/images/{{set}}/{{shard}}.h5",
    output:
        features=f"{RUN}/sift/{{set}}/{{shard}}.h5",
        sparse=f"{RUN}/sift/{{set}}/{{shard}}.sparse.csv",
    log:
        f"{RUN}/logs/sift/{{set}}/{{shard}}.log",
    benchmark:
        f"{RUN}/benchmarks/sift/{{set}}/{{shard}}.tsv"
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
        features=f"{RUN}/sift/queries/{{shard}}.h5",
    output:
        features=f"{RUN}/sift/queries_mirrored/{{shard}}.h5",
    log:
        f"{RUN}/logs/mirror_query_sift/{{shard}}.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/mirror_sift.py"
