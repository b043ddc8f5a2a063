"""Rule embed_images: neural global embeddings (float16) for every image of one image shard."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.gpu import DEFAULT_LOCK_DIR, lease_for_device_job  # noqa: E402


def model_settings() -> dict:
    """The model's config entry without its ``name`` (and with its ``backend``, which the
    workflow's ``model_params`` leaves out: it picks the rule; read it from the config then)."""
    spec = {k: v for k, v in dict(snakemake.params.model).items() if k != "name"}
    if "backend" not in spec:
        spec["backend"] = snakemake.config["models"][snakemake.wildcards.model]["backend"]
    return spec


spec = model_settings()
# Before torch is imported: the lease sets CUDA_VISIBLE_DEVICES for this job.
lease = lease_for_device_job(
    str(spec.get("device", "auto")),
    int(snakemake.resources.get("gpu", 0)),
    snakemake.params.get("gpu_lock_dir", DEFAULT_LOCK_DIR),
)

import torch  # noqa: E402

from copydetect.embed import EmbedError, EmbedParams, embed_image_shard  # noqa: E402

torch.set_num_threads(snakemake.threads)
try:
    params = EmbedParams.from_mapping(spec)
    if params.device == "auto" and not lease.devices:
        params = EmbedParams.from_mapping({**spec, "device": "cpu"})  # no GPU granted
    logging.info("model %s: %s", snakemake.wildcards.get("model", "?"), params)
    embed_image_shard(snakemake.input.shard, snakemake.output.embeddings, params)
except EmbedError as exc:
    logging.error("%s", exc)  # a message naming the file or key is enough: no traceback
    sys.exit(1)
