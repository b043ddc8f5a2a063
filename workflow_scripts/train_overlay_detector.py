"""Rule train_overlay_detector: train the YOLO overlay detector offline; best.pt + metrics."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - the log lives as long as the job
# ultralytics prints its progress to stdout: that belongs in the job's log too.
sys.stdout = sys.stderr
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.gpu import DEFAULT_LOCK_DIR, lease_for_device_job  # noqa: E402

train = dict(snakemake.params.train)
# Before torch is imported: the lease sets CUDA_VISIBLE_DEVICES for this job.
lease = lease_for_device_job(
    str(train.get("device", "auto")),
    int(snakemake.resources.get("gpu", 0)),
    snakemake.params.get("gpu_lock_dir", DEFAULT_LOCK_DIR),
)

import torch  # noqa: E402

from copydetect.detector import (  # noqa: E402
    DetectorError,
    TrainParams,
    train_detector,
)
from copydetect.devices import resolve_device  # noqa: E402

torch.set_num_threads(snakemake.threads)
try:
    params = TrainParams.from_mapping(train)
    device = resolve_device(params.device, bool(lease.devices), gpu="0")
    logging.info("training on %s: %s", device, params)
    train_detector(
        snakemake.input.dataset,
        snakemake.output.weights,
        snakemake.output.metrics,
        params,
        device=device,
        threads=snakemake.threads,
    )
except (DetectorError, ValueError) as exc:
    logging.error("%s", exc)  # a message naming the file or key is enough: no traceback
    sys.exit(1)
