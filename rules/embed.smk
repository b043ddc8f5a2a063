rule fit_vlad_codebook:
    """k-means codebook of a VLAD model, on RootSIFT sampled from the training set."""
    input:
        features=fit_sift_shards,
    output:
        codebook=f"{RUN}/models/{{model}}/codebook.h5",
    log:
        f"{RUN}/logs/fit_vlad_codebook/{{model}}.log",
    benchmark:
        f"{RUN}/benchmarks/fit_vlad_codebook/{{model}}.tsv"
    wildcard_constraints:
        model=models_with_backend("vlad"),
    conda:
        "../envs/cpu.yaml"
    params:
        vlad=codebook_params,
    script:
        "../workflow_scripts/fit_vlad_codebook.py"


rule embed_vlad:
    """VLAD vectors of one shard's images from their RootSIFT descriptors."""
    input:
        features=f"{RUN}/sift/{{set}}/{{shard}}.h5",
        codebook=f"{RUN}/models/{{model}}/codebook.h5",
    output:
        embeddings=f"{RUN}/embeddings/{{model}}/{{set}}/{{shard}}.h5",
    log:
        f"{RUN}/logs/embed/{{model}}/{{set}}/{{shard}}.log",
    benchmark:
        f"{RUN}/benchmarks/embed/{{model}}/{{set}}/{{shard}}.tsv"
    wildcard_constraints:
        model=models_with_backend("vlad"),
    conda:
        "../envs/cpu.yaml"
    params:
        vlad=model_params,
    script:
        "../workflow_scripts/embed_vlad_shard.py"


rule embed_layout:
    """Layout vectors (multi-scale colour thumbnails, no weights, no keypoints) of one image
    shard."""
    input:
        shard=f"{RUN}/images/{{set}}/{{shard}}.h5",
    output:
        embeddings=f"{RUN}/embeddings/{{model}}/{{set}}/{{shard}}.h5",
    log:
        f"{RUN}/logs/embed/{{model}}/{{set}}/{{shard}}.log",
    benchmark:
        f"{RUN}/benchmarks/embed/{{model}}/{{set}}/{{shard}}.tsv"
    wildcard_constraints:
        model=models_with_backend("layout"),
    conda:
        "../envs/cpu.yaml"
    params:
        layout=model_params,
    script:
        "../workflow_scripts/embed_layout_shard.py"


rule embed_images:
    """Neural embeddings (ResNet-GeM, Swin, TorchScript, ONNX) of one image shard."""
    input:
        shard=f"{RUN}/images/{{set}}/{{shard}}.h5",
        weights=model_weights,
    output:
        embeddings=f"{RUN}/embeddings/{{model}}/{{set}}/{{shard}}.h5",
    log:
        f"{RUN}/logs/embed/{{model}}/{{set}}/{{shard}}.log",
    benchmark:
        f"{RUN}/benchmarks/embed/{{model}}/{{set}}/{{shard}}.tsv"
    wildcard_constraints:
        model=models_with_backend("neural"),
    conda:
        "../envs/gpu.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        model=model_spec,
        gpu_lock_dir=config["gpu"]["lock_dir"],
    script:
        "../workflow_scripts/embed_shard.py"


rule fit_normalization:
    """PCA-whitening and the score-normalization bank of one model."""
    input:
        embeddings=fit_embedding_shards,
    output:
        normalization=f"{RUN}/models/{{model}}/normalization.h5",
    log:
        f"{RUN}/logs/fit_normalization/{{model}}.log",
    benchmark:
        f"{RUN}/benchmarks/fit_normalization/{{model}}.tsv"
    conda:
        "../envs/cpu.yaml"
    params:
        normalization=config["global"]["normalization"],
    script:
        "../workflow_scripts/fit_normalization.py"


rule project_embeddings:
    """A shard's embeddings after the model's PCA-whitening and L2: what the search reads."""
    input:
        embeddings=f"{RUN}/embeddings/{{model}}/{{set}}/{{shard}}.h5",
        normalization=f"{RUN}/models/{{model}}/normalization.h5",
    output:
        projected=f"{RUN}/projected/{{model}}/{{set}}/{{shard}}.h5",
    log:
        f"{RUN}/logs/project_embeddings/{{model}}/{{set}}/{{shard}}.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/project_embeddings.py"


rule augment_references:
    """DBA: one reference shard's vectors averaged with their nearest other references."""
    input:
        shard=f"{RUN}/projected/{{model}}/references/{{shard}}.h5",
        references=reference_embedding_shards,
    output:
        augmented=f"{RUN}/augmented/{{model}}/references/{{shard}}.h5",
    log:
        f"{RUN}/logs/augment_references/{{model}}/{{shard}}.log",
    benchmark:
        f"{RUN}/benchmarks/augment_references/{{model}}/{{shard}}.tsv"
    conda:
        "../envs/gpu.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        dba=config["global"]["dba"],
        gpu_lock_dir=config["gpu"]["lock_dir"],
    script:
        "../workflow_scripts/augment_references.py"


rule export_isc2021:
    """A set's raw embeddings in the isc2021 layout (image_names, vectors), on request."""
    input:
        shards=set_embedding_shards,
    output:
        export=f"{RESULTS}/export/{{model}}/{{set}}.h5",
    log:
        f"{RESULTS}/logs/export_isc2021/{{model}}/{{set}}.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/export_isc2021.py"
