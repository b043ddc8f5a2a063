"""Rule detect_overlays: the overlay box of every query of one shard and its crop shards."""

import logging

from copydetect.rule_script import RuleJob, exit_cleanly_on, start


def main(job: RuleJob, detect: dict) -> None:
    import torch

    from copydetect.detector import DetectorError, detect_overlays
    from copydetect.devices import resolve_device
    from copydetect.overlay import DetectParams

    torch.set_num_threads(snakemake.threads)
    with exit_cleanly_on(DetectorError, ValueError):
        params = DetectParams.from_mapping(detect)
        device = resolve_device(params.device, job.on_gpu, gpu="0")
        logging.info("detecting on %s: %s", device, params)
        logging.info("torch device: %s", device)  # read by benchmarks/gpu_check.py
        detect_overlays(
            snakemake.input.shard,
            snakemake.input.weights,
            snakemake.output.detections,
            snakemake.output.crops_global,
            snakemake.output.crops_local,
            params,
            device=device,
        )


detect = dict(snakemake.params.detect)
main(start(snakemake, device=str(detect["device"])), detect)
