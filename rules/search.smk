rule fit_local_index:
    """Coarse quantizer of the local inverted file (local.index.type: ivf): k-means cells of
    RootSIFT sampled from the training set (else the references), fitted once and shared by
    every reference shard, so a new shard needs no refitting."""
    input:
        features=fit_sift_shards,
    output:
        index=f"{RUN}/models/local/coarse.faiss",
    log:
        f"{RUN}/logs/fit_local_index.log",
    benchmark:
        f"{RUN}/benchmarks/fit_local_index.tsv"
    conda:
        "../envs/cpu.yaml"
    params:
        index=config["local"]["index"],
        reference_images=reference_scale,
    script:
        "../workflow_scripts/fit_local_index.py"


rule index_local_shard:
    """Inverted lists of one reference shard's RootSIFT against the shared coarse quantizer."""
    input:
        features=f"{RUN}/sift/references/{{shard}}.h5",
        coarse=f"{RUN}/models/local/coarse.faiss",
    output:
        index=f"{RUN}/index/local/{{shard}}.h5",
    log:
        f"{RUN}/logs/index_local_shard/{{shard}}.log",
    benchmark:
        f"{RUN}/benchmarks/index_local_shard/{{shard}}.tsv"
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/index_local_shard.py"


rule assign_local_cells:
    """The nprobe coarse cells of every descriptor of one query shard (or its local crops):
    assigned once, read by each of the shard's local_search jobs (one per reference group).
    """
    input:
        queries=f"{RUN}/sift/{{view}}/{{shard}}.h5",
        coarse=f"{RUN}/models/local/coarse.faiss",
    output:
        cells=f"{RUN}/search/local/{{view}}/{{shard}}.cells.h5",
    log:
        f"{RUN}/logs/assign_local_cells/{{view}}/{{shard}}.log",
    benchmark:
        f"{RUN}/benchmarks/assign_local_cells/{{view}}/{{shard}}.tsv"
    wildcard_constraints:
        view="queries|queries_mirrored|crops_local",
    conda:
        "../envs/cpu.yaml"
    threads: 2
    params:
        search=config["local"]["search"],
    script:
        "../workflow_scripts/assign_local_cells.py"


rule local_search:
    """Nearest reference descriptors of every descriptor of one query shard (or its local crops),
    over one group of reference shards, a run at a time (memory bounded by one run, never by
    the whole reference set): the shards' inverted lists merged in runs (ivf), scanning the
    query shard's cells, or their SIFT shards one at a time (flat).
    """
    input:
        queries=f"{RUN}/sift/{{view}}/{{shard}}.h5",
        references=reference_group_index,
        cells=local_query_cells,
    output:
        neighbors=f"{RUN}/search/local/{{view}}/{{shard}}/{{group}}.h5",
    log:
        f"{RUN}/logs/local_search/{{view}}/{{shard}}/{{group}}.log",
    benchmark:
        f"{RUN}/benchmarks/local_search/{{view}}/{{shard}}/{{group}}.tsv"
    wildcard_constraints:
        view="queries|queries_mirrored|crops_local",
    conda:
        "../envs/gpu.yaml"
    threads: 4
    resources:
        gpu=local_search_gpus,
    params:
        search=config["local"]["search"],
        gpu_lock_dir=config["gpu"]["lock_dir"],
    script:
        "../workflow_scripts/local_search_block.py"


rule local_candidates:
    """Merge one query shard's neighbours over all reference groups into votes and candidates."""
    input:
        queries=f"{RUN}/sift/{{view}}/{{shard}}.h5",
        neighbors=query_shard_neighbors,
    output:
        votes=f"{RUN}/search/local/{{view}}/{{shard}}.votes.csv",
        candidates=f"{RUN}/search/local/{{view}}/{{shard}}.candidates.csv",
    log:
        f"{RUN}/logs/local_candidates/{{view}}/{{shard}}.log",
    wildcard_constraints:
        view="queries|queries_mirrored|crops_local",
    conda:
        "../envs/cpu.yaml"
    params:
        search=config["local"]["search"],  # k: the width of the neighbour files
        votes=config["local"]["votes"],
        candidates=config["local"]["candidates"],
    script:
        "../workflow_scripts/local_candidates.py"


rule global_search:
    """kNN of one query shard's embeddings (or its global crops') over every reference shard of
    a model (one shard in memory at a time), with score normalization against the bank.
    """
    input:
        queries=f"{RUN}/projected/{{model}}/{{view}}/{{shard}}.h5",
        references=searched_reference_shards,
        normalization=f"{RUN}/models/{{model}}/normalization.h5",
    output:
        candidates=f"{RUN}/search/global/{{model}}/{{view}}/{{shard}}.candidates.csv",
    log:
        f"{RUN}/logs/global_search/{{model}}/{{view}}/{{shard}}.log",
    benchmark:
        f"{RUN}/benchmarks/global_search/{{model}}/{{view}}/{{shard}}.tsv"
    wildcard_constraints:
        view="queries|crops_global",
    conda:
        "../envs/gpu.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        search=config["global"]["search"],
        gpu_lock_dir=config["gpu"]["lock_dir"],
    script:
        "../workflow_scripts/global_search.py"
