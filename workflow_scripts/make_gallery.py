"""Rule make_gallery: results/report/gallery.html, the offline match gallery."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

import cv2  # noqa: E402

from copydetect.gallery import (  # noqa: E402
    GalleryInputs,
    GalleryParams,
    read_metrics,
    write_gallery,
)
from copydetect.metrics import read_ground_truth  # noqa: E402
from copydetect.rule_inputs import input_files, optional_file  # noqa: E402
from copydetect.verify import VerifyParams  # noqa: E402

# The job's threads are the budget: OpenCV would otherwise start one thread per core.
cv2.setNumThreads(max(1, int(getattr(snakemake, "threads", 1))))
ground_truth_path = optional_file(snakemake.input, "ground_truth")
metrics_path = optional_file(snakemake.input, "metrics")
inputs = GalleryInputs(
    scored_pairs=snakemake.input.scored_pairs,
    predictions=snakemake.input.predictions,
    query_images=list(snakemake.input.query_images),
    reference_images=list(snakemake.input.reference_images),
    query_features=list(snakemake.input.query_features),
    reference_features=list(snakemake.input.reference_features),
    mirrored_query_features=input_files(snakemake.input, "mirrored_query_features"),
    ground_truth=read_ground_truth(ground_truth_path) if ground_truth_path else None,
    metrics=read_metrics(metrics_path) if metrics_path else None,
)
write_gallery(
    inputs,
    snakemake.output.gallery,
    GalleryParams.from_mapping(snakemake.params.report),
    VerifyParams.from_mapping(snakemake.params.verify),
)
