"""Helpers shared by the rules: image-set listing, shard tables and target lists.

Everything here runs at DAG-build time, so it only lists files (no stat, no decode) and caches
each listing once per run.
"""

import sys
from functools import cache
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "workflow_scripts"))

from copydetect.inputs import (  # noqa: E402
    ImageSetError,
    assign_shards,
    group_shards,
    list_image_set,
    shard_count,
)

IMAGE_SETS = ("queries", "references", "training")
RESULTS = "results"


wildcard_constraints:
    set="|".join(IMAGE_SETS),
    shard=r"s\d{4}",
    group=r"g\d{4}",


@cache
def image_shards(set_name):
    """Shard name -> ImageEntry list of one image set, listed once per run."""
    source = config[set_name]
    if not source:
        raise WorkflowError(
            f"config key {set_name!r} is empty: give a directory or list file, "
            f"e.g. snakemake --config {set_name}=path/to/{set_name}"
        )
    try:
        stat = config["sharding"]["change_detection"] == "stat"
        entries = list_image_set(source, set_name, fingerprint=stat)
    except ImageSetError as error:
        raise WorkflowError(str(error)) from None
    spec = config["sharding"][set_name]
    return assign_shards(
        entries, shard_count(len(entries), spec["shard_size"], spec["num_shards"])
    )


def shard_names(set_name):
    return list(image_shards(set_name))


def shard_image_table(wildcards):
    """[id, path, fingerprint] rows of one shard: a parameter, not input files (see inputs.py),
    so any change to the table reruns exactly this shard's ingest."""
    return [
        [e.id, e.path, e.fingerprint]
        for e in image_shards(wildcards.set)[wildcards.shard]
    ]


def set_shard_files(set_name, pattern):
    """``pattern`` (with {shard}) formatted for every shard of a set."""
    return [
        pattern.format(set=set_name, shard=shard) for shard in shard_names(set_name)
    ]


def image_set_files(suffix):
    """Input function: a per-shard image-shard file with ``suffix`` for every shard of {set}."""

    def files(wildcards):
        return set_shard_files(
            wildcards.set, f"{RESULTS}/images/{{set}}/{{shard}}{suffix}"
        )

    return files


@cache
def reference_groups():
    """Group name -> reference shard names searched together by one local-search job."""
    per_job = config["local"]["reference_shards_per_job"]
    return group_shards(shard_names("references"), per_job)


def reference_group_features(wildcards):
    return [
        f"{RESULTS}/sift/references/{shard}.h5"
        for shard in reference_groups()[wildcards.group]
    ]


def query_shard_neighbors(wildcards):
    return [
        f"{RESULTS}/search/local/{wildcards.shard}/{group}.h5"
        for group in reference_groups()
    ]


def active_sets():
    return [name for name in IMAGE_SETS if name != "training" or config["training"]]


def final_outputs(wildcards):
    """Targets of the default target (all): ingest summaries, predictions and, with ground truth, metrics."""
    targets = [f"{RESULTS}/images/{name}/summary.json" for name in active_sets()]
    targets.append(f"{RESULTS}/predictions.csv")
    if config["ground_truth"]:
        targets += [f"{RESULTS}/eval/metrics.json", f"{RESULTS}/eval/pr_curve.png"]
    return targets


def reference_sift_shards(wildcards):
    return set_shard_files("references", f"{RESULTS}/sift/{{set}}/{{shard}}.h5")


def query_pair_tables(wildcards):
    return set_shard_files("queries", f"{RESULTS}/verify/{{shard}}.pairs.csv")


_CANDIDATE_KEYS = ("candidates_per_query", "min_votes")
_VOTE_KEYS = ("max_distance", "ratio")


def _local_params(skip):
    skip = (*skip, "reference_shards_per_job")
    return {key: value for key, value in config["local"].items() if key not in skip}


def local_search_params():
    """The ``local`` keys a search job reads: not the vote filters nor candidate selection, so
    changing those reruns only local_candidates, never the searches."""
    return _local_params((*_CANDIDATE_KEYS, *_VOTE_KEYS))


def local_vote_params():
    return _local_params(_CANDIDATE_KEYS)


def local_candidate_params():
    return {key: config["local"][key] for key in _CANDIDATE_KEYS}


# --- Global branch ----------------------------------------------------------------------------


def models_with_backend(vlad):
    """Names of the configured models that are (not) VLAD, as a wildcard regex."""
    names = [
        name
        for name, spec in config["models"].items()
        if (spec["backend"] == "vlad") == vlad
    ]
    return "|".join(names) if names else "(?!)"  # "(?!)" matches nothing


def global_models():
    unknown = [
        name for name in config["global"]["models"] if name not in config["models"]
    ]
    if unknown:
        raise WorkflowError(
            f"global.models names {unknown}, which are not defined under 'models' "
            f"(defined: {sorted(config['models'])})"
        )
    return list(config["global"]["models"])


def model_spec(wildcards):
    """A model's settings as configured, backend included (so a new backend reruns it)."""
    return dict(config["models"][wildcards.model])


def model_params(wildcards):
    """A VLAD model's settings without its backend name (the backend picks the rule)."""
    spec = model_spec(wildcards)
    spec.pop("backend")
    return spec


def codebook_params(wildcards):
    """The VLAD settings the codebook depends on (not ``power``, applied when encoding)."""
    spec = model_params(wildcards)
    spec.pop("power", None)
    return spec


def model_weights(wildcards):
    """The weights file as an input, so replacing it reruns that model's embeddings."""
    weights = config["models"][wildcards.model].get("weights", "")
    return [weights] if weights else []


def fit_set():
    """Set that codebooks and PCA are fitted on: training when given, else the references."""
    return "training" if config["training"] else "references"


def fit_sift_shards(wildcards):
    return set_shard_files(fit_set(), f"{RESULTS}/sift/{{set}}/{{shard}}.h5")


def fit_embedding_shards(wildcards):
    pattern = f"{RESULTS}/embeddings/{wildcards.model}/{{set}}/{{shard}}.h5"
    return set_shard_files(fit_set(), pattern)


def reference_embedding_shards(wildcards):
    """Projected reference shards of a model (all of them: DBA and the search read every one)."""
    pattern = f"{RESULTS}/projected/{wildcards.model}/{{set}}/{{shard}}.h5"
    return set_shard_files("references", pattern)


def searched_reference_shards(wildcards):
    """What the global search reads: DBA-augmented references when DBA is on."""
    if config["global"]["dba"]["k"] == 0:
        return reference_embedding_shards(wildcards)
    pattern = f"{RESULTS}/augmented/{wildcards.model}/{{set}}/{{shard}}.h5"
    return set_shard_files("references", pattern)


def query_candidate_tables(wildcards):
    """Every branch's candidates of one query shard: local first, then each global model."""
    tables = [f"{RESULTS}/search/local/{wildcards.shard}.candidates.csv"]
    tables += [
        f"{RESULTS}/search/global/{model}/{wildcards.shard}.candidates.csv"
        for model in global_models()
    ]
    return tables


def candidate_branches():
    return ["local", *global_models()]


def set_embedding_shards(wildcards):
    pattern = f"{RESULTS}/embeddings/{wildcards.model}/{{set}}/{{shard}}.h5"
    return set_shard_files(wildcards.set, pattern)
