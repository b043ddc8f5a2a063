"""Rule train_overlay_detector: train the YOLO overlay detector offline; best.pt + metrics."""

import logging

from copydetect.rule_script import RuleJob, exit_cleanly_on, start


def main(job: RuleJob, train: dict) -> None:
    import torch

    from copydetect.detector import DetectorError, TrainParams, train_detector
    from copydetect.devices import resolve_device

    torch.set_num_threads(snakemake.threads)
    with exit_cleanly_on(DetectorError, ValueError):
        params = TrainParams.from_mapping(train)
        device = resolve_device(params.device, job.on_gpu, gpu="0")
        logging.info("training on %s: %s", device, params)
        logging.info("torch device: %s", device)  # read by benchmarks/gpu_check.py
        train_detector(
            snakemake.input.dataset,
            snakemake.output.weights,
            snakemake.output.metrics,
            params,
            device=device,
            threads=snakemake.threads,
        )


train = dict(snakemake.params.train)
main(start(snakemake, device=str(train["device"])), train)
