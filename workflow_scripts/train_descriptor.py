"""Rule train_descriptor: train a copy-detection descriptor (SSCD recipe) on the training set."""

import logging

from copydetect.rule_script import RuleJob, exit_cleanly_on, start


def main(job: RuleJob, spec: dict) -> None:
    import torch

    from copydetect.descriptor_recipe import RecipeError, trained_model
    from copydetect.descriptor_training import DescriptorError, TrainingOutputs, train_descriptor
    from copydetect.devices import DeviceError, resolve_device

    torch.set_num_threads(snakemake.threads)
    with exit_cleanly_on(RecipeError, DescriptorError, DeviceError):
        model = trained_model(spec)
        device = resolve_device(model.recipe.device, job.on_gpu)
        logging.info("model %s on %s: %s", snakemake.wildcards.model, device, model)
        logging.info("torch device: %s", device)  # read by benchmarks/gpu_check.py
        outputs = TrainingOutputs(
            weights=snakemake.output.weights,
            torchscript=snakemake.output.torchscript,
            metrics=snakemake.output.metrics,
        )
        train_descriptor(snakemake.input.shards, outputs, model, device)


# The training's settings with the defaults filled in (copydetect.descriptor_recipe).
spec = dict(snakemake.params.recipe)
main(start(snakemake, device=str(spec["train"]["device"])), spec)
