rule synthesize_overlay_data:
    """A seeded YOLO dataset of pasted images (the training set's, or the references' when
    there is none) on other pictures, screenshots and meme frames, labeled with the paste box.
    """
    input:
        shards=fit_image_shards,
    output:
        dataset=directory(f"{RESULTS}/overlay/dataset"),
    log:
        f"{RESULTS}/logs/synthesize_overlay_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/synthesize_overlay_data.tsv"
    conda:
        "../envs/cpu.yaml"
    params:
        dataset=config["overlay"]["dataset"],
    script:
        "../workflow_scripts/synthesize_overlay_data.py"


rule train_overlay_detector:
    """ultralytics YOLO trained from its model YAML on the synthetic overlays, fully offline;
    skipped when overlay.detector names a weights file."""
    input:
        dataset=f"{RESULTS}/overlay/dataset",
    output:
        weights=f"{RESULTS}/overlay/detector.pt",
        metrics=f"{RESULTS}/overlay/detector_metrics.json",
    log:
        f"{RESULTS}/logs/train_overlay_detector.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_overlay_detector.tsv"
    conda:
        "../envs/gpu.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        train=config["overlay"]["train"],
        gpu_lock_dir=config["gpu"]["lock_dir"],
    script:
        "../workflow_scripts/train_overlay_detector.py"


rule detect_overlays:
    """The best overlay box of every query of one shard, and its crops for the global and the
    local crop branches (queries without a kept box are listed, not cropped): by a YOLO
    detector (GPU), or by the weights-free rectangle finder (overlay.detector: rectangles, CPU).
    """
    input:
        shard=f"{RUN}/images/queries/{{shard}}.h5",
        weights=overlay_detector_weights,
    output:
        detections=f"{RUN}/detect/{{shard}}.csv",
        crops_global=f"{RUN}/images/crops_global/{{shard}}.h5",
        crops_local=f"{RUN}/images/crops_local/{{shard}}.h5",
    log:
        f"{RUN}/logs/detect_overlays/{{shard}}.log",
    benchmark:
        f"{RUN}/benchmarks/detect_overlays/{{shard}}.tsv"
    conda:
        "../envs/gpu.yaml"
    threads: 2
    resources:
        gpu=overlay_detector_gpus,
    params:
        detector=config["overlay"]["detector"],
        detect=config["overlay"]["detect"],
        rectangles=config["overlay"]["rectangles"],
        gpu_lock_dir=config["gpu"]["lock_dir"],
    script:
        "../workflow_scripts/detect_overlays.py"
