"""Rule detect_overlays: the overlay box of every query of one shard and its crop shards."""

import logging

from copydetect.rule_script import RuleJob, exit_cleanly_on, start


def main(job: RuleJob, detector: str, detect: dict, rectangles: dict) -> None:
    from copydetect.detector import DetectorError, detect_overlays, detect_rectangles
    from copydetect.overlay import DetectParams
    from copydetect.rectangles import RectangleParams

    out = snakemake.output
    with exit_cleanly_on(DetectorError, ValueError):
        params = DetectParams.from_mapping(detect)
        if detector == "rectangles":  # weights-free: no torch, no device
            finder = RectangleParams.from_mapping(rectangles)
            logging.info("rectangles: %s; %s", finder, params)
            detect_rectangles(
                snakemake.input.shard,
                out.detections,
                out.crops_global,
                out.crops_local,
                params,
                finder,
            )
            return
        import torch

        from copydetect.devices import resolve_device

        torch.set_num_threads(snakemake.threads)
        device = resolve_device(params.device, job.on_gpu, gpu="0")
        logging.info("detecting on %s: %s", device, params)
        logging.info("torch device: %s", device)  # read by benchmarks/gpu_check.py
        detect_overlays(
            snakemake.input.shard,
            snakemake.input.weights,
            out.detections,
            out.crops_global,
            out.crops_local,
            params,
            device=device,
        )


params = snakemake.params
detect = dict(params.detect)
device = "cpu" if params.detector == "rectangles" else str(detect["device"])
main(start(snakemake, device=device), params.detector, detect, dict(params.rectangles))
