"""Rule detect_overlays: the overlay box of every query of one shard and its crop shards."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
# ultralytics prints its progress to stdout: that belongs in the job's log too.
sys.stdout = sys.stderr
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.gpu import DEFAULT_LOCK_DIR, lease_for_device_job  # noqa: E402

detect = dict(snakemake.params.detect)
# Before torch is imported: the lease sets CUDA_VISIBLE_DEVICES for this job.
lease = lease_for_device_job(
    str(detect.get("device", "auto")),
    int(snakemake.resources.get("gpu", 0)),
    snakemake.params.get("gpu_lock_dir", DEFAULT_LOCK_DIR),
)

import torch  # noqa: E402

from copydetect.detector import DetectorError, detect_overlays  # noqa: E402
from copydetect.devices import resolve_device  # noqa: E402
from copydetect.overlay import DetectParams  # noqa: E402

torch.set_num_threads(snakemake.threads)
try:
    params = DetectParams.from_mapping(detect)
    device = resolve_device(params.device, bool(lease.devices), gpu="0")
    logging.info("detecting on %s: %s", device, params)
    detect_overlays(
        snakemake.input.shard,
        snakemake.input.weights,
        snakemake.output.detections,
        snakemake.output.crops_global,
        snakemake.output.crops_local,
        params,
        device=device,
    )
except (DetectorError, ValueError) as exc:
    logging.error("%s", exc)  # a message naming the file or key is enough: no traceback
    sys.exit(1)
