rule ingest:
    """Decode, normalize and re-encode one shard of an image set; bad images become rejects."""
    input:
        synthesized=synthesized_images,
    output:
        shard=f"{RUN}/images/{{set}}/{{shard}}.h5",
        rejects=f"{RUN}/images/{{set}}/{{shard}}.rejects.csv",
    log:
        f"{RUN}/logs/ingest/{{set}}/{{shard}}.log",
    benchmark:
        f"{RUN}/benchmarks/ingest/{{set}}/{{shard}}.tsv"
    wildcard_constraints:
        set="|".join(IMAGE_SETS),
    conda:
        "../envs/cpu.yaml"
    params:
        images=shard_image_table,
        development_shard=development_shard,
        ingest=config["ingest"],
    script:
        "../workflow_scripts/ingest_shard.py"


rule summarize_ingest:
    """Merge the per-shard counts and rejects of one image set."""
    input:
        shards=image_set_files(".h5"),
        rejects=image_set_files(".rejects.csv"),
    output:
        summary=f"{RESULTS}/images/{{set}}/summary.json",
        rejects=f"{RESULTS}/images/{{set}}/rejects.csv",
    log:
        f"{RESULTS}/logs/summarize_ingest/{{set}}.log",
    conda:
        "../envs/cpu.yaml"
    params:
        listing_rejects=listing_rejects,
    script:
        "../workflow_scripts/summarize_ingest.py"
