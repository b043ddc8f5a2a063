report: "../report/workflow.rst"


rule make_gallery:
    """gallery.html: top matches, highest-scored wrong matches and missed copies side by side
    with their per-branch evidence and verified inlier lines (offline, thumbnails embedded).
    """
    input:
        scored_pairs=f"{RESULTS}/fuse/scored_pairs.csv",
        predictions=f"{RESULTS}/predictions.csv",
        query_images=gallery_query_images,
        reference_images=gallery_reference_images,
        query_features=gallery_query_features,
        reference_features=reference_sift_shards,
        mirrored_query_features=gallery_mirrored_query_features,
        ground_truth=config["ground_truth"] or [],
        metrics=gallery_metrics,
    output:
        gallery=report(
            f"{RESULTS}/report/gallery.html",
            caption="../report/gallery.rst",
            category="Gallery",
        ),
    log:
        f"{RESULTS}/logs/make_gallery.log",
    benchmark:
        f"{RESULTS}/benchmarks/make_gallery.tsv"
    conda:
        "../envs/cpu.yaml"
    params:
        report=config["report"],
        verify=config["verify"],
    script:
        "../workflow_scripts/make_gallery.py"
