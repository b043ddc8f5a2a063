"""Rule make_gallery: results/report/gallery.html, the offline match gallery."""

from copydetect.rule_script import start


def main() -> None:
    import cv2

    from copydetect.gallery import (
        GalleryInputs,
        GalleryParams,
        read_metrics,
        write_gallery,
    )
    from copydetect.metrics import read_ground_truth
    from copydetect.rule_inputs import optional_file
    from copydetect.sift import SiftParams
    from copydetect.verify import VerifyParams

    # The job's threads are the budget: OpenCV would otherwise start one thread per core.
    cv2.setNumThreads(max(1, snakemake.threads))
    ground_truth_path = optional_file(snakemake.input, "ground_truth")
    metrics_path = optional_file(snakemake.input, "metrics")
    inputs = GalleryInputs(
        scored_pairs=snakemake.input.scored_pairs,
        predictions=snakemake.input.predictions,
        query_images=list(snakemake.input.query_images),
        reference_images=list(snakemake.input.reference_images),
        query_features=list(snakemake.input.query_features),
        reference_features=list(snakemake.input.reference_features),
        ground_truth=read_ground_truth(ground_truth_path) if ground_truth_path else None,
        metrics=read_metrics(metrics_path) if metrics_path else None,
    )
    write_gallery(
        inputs,
        snakemake.output.gallery,
        GalleryParams.from_mapping(snakemake.params.report),
        VerifyParams.from_mapping(snakemake.params.verify),
        SiftParams.from_mapping(snakemake.params.sift),
    )


start(snakemake)
main()
