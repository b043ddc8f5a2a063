"""Rule synthesize_queries: build the labeled benchmark (see ``copydetect.synth``).

``params.synthesize`` is the config's ``synthesize`` section: ``sources`` is a folder (or glob) of
photographs, or ``skimage`` for tiles of scikit-image's bundled sample photos; the counts and the
seed map onto ``SynthesisConfig``. ``output[0]`` is the benchmark folder.
"""

import logging
import sys
import tempfile
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115 - lives as long as the job
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

from copydetect.synth import (  # noqa: E402 - after the log redirect, so import errors are logged
    SynthesisConfig,
    resolve_sources,
    skimage_sources,
    synthesize,
)

params = dict(snakemake.params.synthesize)
cfg = SynthesisConfig(
    n_references=int(params["references"]),
    n_copy_queries=int(params["copy_queries"]),
    n_distractors=int(params["distractors"]),
    n_training=int(params["training"]),
    seed=int(params["seed"]),
    max_side=int(params["max_side"]),
    n_backgrounds=int(params["backgrounds"]),
)
out_dir = Path(snakemake.output[0])
sources = str(params["sources"])

if sources == "skimage":
    # The tiles are regenerated deterministically, so they live in a scratch folder rather than
    # becoming an undeclared output of the rule.
    with tempfile.TemporaryDirectory() as scratch:
        summary = synthesize(skimage_sources(Path(scratch)), out_dir, cfg)
else:
    summary = synthesize(resolve_sources([sources]), out_dir, cfg)
print(summary, file=sys.stderr)
