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
