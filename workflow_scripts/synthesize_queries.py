"""Rule synthesize_queries: build the labeled benchmark (see ``copydetect.synth``).

``params.synthesize`` is the config's ``synthesize`` section: ``sources`` is a folder (or glob) of
photographs, or ``skimage`` for tiles of scikit-image's bundled sample photos; the counts, the
seed and ``edit_set`` (``default`` or ``disc21``) map onto ``SynthesisConfig``. ``output[0]`` is the
benchmark folder.
"""

import sys
import tempfile
from pathlib import Path

from copydetect.rule_script import start


def main() -> None:
    from copydetect.synth import SynthesisConfig, resolve_sources, skimage_sources, synthesize

    params = dict(snakemake.params.synthesize)
    cfg = SynthesisConfig(
        n_references=int(params["references"]),
        n_copy_queries=int(params["copy_queries"]),
        n_distractors=int(params["distractors"]),
        n_training=int(params["training"]),
        seed=int(params["seed"]),
        max_side=int(params["max_side"]),
        n_backgrounds=int(params["backgrounds"]),
        edit_set=str(params["edit_set"]),
    )
    out_dir = Path(snakemake.output[0])
    sources = str(params["sources"])

    if sources == "skimage":
        # The tiles are regenerated deterministically, so they live in a scratch folder rather
        # than becoming an undeclared output of the rule.
        with tempfile.TemporaryDirectory() as scratch:
            summary = synthesize(skimage_sources(Path(scratch)), out_dir, cfg)
    else:
        summary = synthesize(resolve_sources([sources]), out_dir, cfg)
    print(summary, file=sys.stderr)


start(snakemake)
main()
