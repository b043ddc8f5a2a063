"""Rule embed_images: neural global embeddings (float16) for every image of one image shard."""

import logging

from copydetect.rule_script import RuleJob, exit_cleanly_on, start


def main(job: RuleJob, spec: dict) -> None:
    import torch

    from copydetect.embed import EmbedError, EmbedParams, embed_image_shard

    torch.set_num_threads(snakemake.threads)
    with exit_cleanly_on(EmbedError):
        params = EmbedParams.from_mapping(spec)
        if params.device == "auto" and not job.on_gpu:
            params = EmbedParams.from_mapping({**spec, "device": "cpu"})  # no GPU granted
        logging.info("model %s: %s", snakemake.wildcards.model, params)
        embed_image_shard(snakemake.input.shard, snakemake.output.embeddings, params)


# The model's config entry, backend included; "device" is optional there (EmbedParams' default).
spec = dict(snakemake.params.model)
main(start(snakemake, device=spec.get("device")), spec)
