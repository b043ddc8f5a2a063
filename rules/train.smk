rule train_descriptor:
    """A ResNet + GeM + projection trained SSCD-style (InfoNCE + KoLeo on pairs of edited views,
    mixup/cutmix) on the training set; the resnet_gem backend embeds with its weights.
    """
    input:
        shards=training_image_shards,
        init=descriptor_init,
    output:
        weights=f"{RESULTS}/models/{{model}}/{WEIGHTS_NAME}",
        torchscript=f"{RESULTS}/models/{{model}}/{TORCHSCRIPT_NAME}",
        metrics=f"{RESULTS}/models/{{model}}/{METRICS_NAME}",
    log:
        f"{RESULTS}/logs/train_descriptor/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_descriptor/{{model}}.tsv"
    wildcard_constraints:
        model=trained_models(),
    conda:
        "../envs/gpu.yaml"
    threads: descriptor_threads
    resources:
        gpu=descriptor_gpus,
    params:
        recipe=descriptor_recipe,
        gpu_lock_dir=config["gpu"]["lock_dir"],
    script:
        "../workflow_scripts/train_descriptor.py"
