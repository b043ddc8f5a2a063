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
        # Without sift.mirror, which mirror_sift alone reads: changing it reruns no SIFT job.
        sift={key: value for key, value in config["sift"].items() if key != "mirror"},
    script:
        "../workflow_scripts/sift_shard.py"


rule mirror_sift:
    """SIFT of the left-right mirrored images of a query view (queries, crops_local): what the
    local search of the mirrored queries (local.mirrored_queries), verification and the gallery
    (verify.try_flip) read. sift.mirror: the view's own SIFT mirrored by a permutation
    (permute) or SIFT of the mirrored pixels (extract)."""
    input:
        # permute: the view's SIFT shard (its features are mirrored); extract: its image shard.
        source=(
            f"{RUN}/sift/{{view}}/{{shard}}.h5"
            if config["sift"]["mirror"] == "permute"
            else f"{RUN}/images/{{view}}/{{shard}}.h5"
        ),
    output:
        features=f"{RUN}/sift/{{view}}_mirrored/{{shard}}.h5",
    log:
        f"{RUN}/logs/mirror_sift/{{view}}/{{shard}}.log",
    benchmark:
        f"{RUN}/benchmarks/mirror_sift/{{view}}/{{shard}}.tsv"
    wildcard_constraints:
        view="queries|crops_local",
    conda:
        "../envs/cpu.yaml"
    params:
        mirror=config["sift"]["mirror"],
        sift={key: value for key, value in config["sift"].items() if key != "mirror"},
    script:
        "../workflow_scripts/mirror_sift.py"
