"""Helpers shared by the rules: image-set listing, shard tables and target lists.

Everything here runs at DAG-build time, so it only lists files (no stat, no decode) and caches
each listing once per run.

Two runs share the per-shard rules through their ``{run}`` wildcard: the main run (``results``)
on the configured image sets, and, for a logistic fusion fitted in the DAG, the development run
(``results/development``) on the labeled set that rule synthesize_development makes from
the training images. Input functions take the run from that wildcard; rules without one belong
to the main run.
"""

import hashlib
import math
from functools import cache
from pathlib import Path

from snakemake.exceptions import WorkflowError

from copydetect.descriptor_recipe import (
    METRICS_NAME,
    TORCHSCRIPT_NAME,
    WEIGHTS_NAME,
    embedding_spec,
    recipe_params,
)
from copydetect.inputs import (
    ImageSetError,
    assign_shards,
    group_shards,
    scan_image_set,
    shard_count,
    shard_name,
)
from copydetect.run_lock import LiveRunError, require_run_lock, take_run_lock

# Resume after kill -9 with the same command (copydetect.run_lock): the main Snakemake process
# holds a kernel lock for its whole life; holding it proves that the Snakemake lock files a run
# left behind are stale, so they are removed before Snakemake checks them. Jobs (SLURM job
# steps re-reading this file) never touch it.
if workflow.is_main_process:
    take_run_lock()


onstart:
    hold_run_lock()


def hold_run_lock():
    """Before the first job: hold the run lock, or stop because another run is alive here."""
    if workflow.is_main_process:
        try:
            require_run_lock()
        except LiveRunError as error:
            raise WorkflowError(str(error)) from None


IMAGE_SETS = ("queries", "references", "training")
# Crops of the queries made by detect_overlays: image shards like the others, one per query
# shard, holding only the queries whose overlay box passed that branch's filters.
CROP_SETS = ("crops_global", "crops_local")
RESULTS = "results"
# The development run: same models, branches and parameters, its own image sets (under data/,
# made by rule synthesize_development) and no training set (codebooks and PCA are fitted on its
# references, which come from the training images anyway).
DEVELOPMENT = f"{RESULTS}/development"
DEVELOPMENT_DATA = f"{DEVELOPMENT}/data"
RUN = "{run}"  # the first part of every per-run path: RESULTS or DEVELOPMENT


wildcard_constraints:
    run=f"{RESULTS}|{DEVELOPMENT}",
    set="|".join((*IMAGE_SETS, *CROP_SETS)),
    shard=r"s\d{4}",
    group=r"g\d{4}",


def run_of(wildcards):
    """The run of a job: its {run} wildcard; a rule without one belongs to the main run."""
    return wildcards.get("run", RESULTS)


def image_source(run, set_name):
    """Where a run's image set is: the config's, or the synthesized development set's."""
    if run == RESULTS:
        return config[set_name]
    return "" if set_name == "training" else f"{DEVELOPMENT_DATA}/{set_name}"


def image_listing(run, set_name):
    """The images of one of the main run's image sets and the files under it that listing
    turned away, listed once. The development set is never listed here: it does not exist
    when the DAG is built (see image_count)."""
    if run != RESULTS:
        raise WorkflowError(f"the {run} run's images are listed by its ingest jobs")
    source = image_source(run, set_name)
    if not source:
        raise WorkflowError(
            f"config key {set_name!r} is empty: give a directory or list file, "
            f"e.g. snakemake --config {set_name}=path/to/{set_name}"
        )
    return _listing(source, set_name)


@cache
def _listing(source, set_name):
    try:
        stat = config["sharding"]["change_detection"] == "stat"
        return scan_image_set(source, set_name, fingerprint=stat)
    except ImageSetError as error:
        raise WorkflowError(str(error)) from None


def image_count(run, set_name):
    """Images in a run's set: the main run's as listed; the development set's as its synthesis
    will make them (a plain rule, not a checkpoint: Snakemake can end a run early when a
    checkpoint's DAG update meets running SLURM group jobs, snakemake/snakemake#823)."""
    if run == RESULTS:
        return len(image_listing(run, set_name).entries)
    return development_counts()[set_name]


@cache
def development_counts():
    """Set name -> image count of the development set, from the training listing alone."""
    # Imported here: the synthesizer costs ~0.3 s to import, and every job that Snakemake
    # starts on a cluster parses this file again; only a development run needs it.
    from copydetect.development import development_params, synthesis_config

    params = development_params(config["fusion"]["development"])
    try:
        planned = synthesis_config(image_count(RESULTS, "training"), params)
    except ValueError as error:
        raise WorkflowError(f"fusion.development: {error}") from None
    return {
        "references": planned.n_references,
        "queries": planned.n_copy_queries + planned.n_distractors,
    }


def set_shard_count(run, set_name):
    spec = config["sharding"][set_name]
    return shard_count(
        image_count(run, set_name), spec["shard_size"], spec["num_shards"]
    )


def image_shards(run, set_name):
    """Shard name -> ImageEntry list of one of the main run's image sets."""
    entries = image_listing(run, set_name).entries
    return assign_shards(entries, set_shard_count(run, set_name))


def listing_rejects(wildcards):
    """[id, path, reason] rows of the files under a set that are not ingested (not images,
    unreadable folders, names that are not UTF-8): summarize_ingest adds them to the set's
    rejects table, so every file is accounted for."""
    if wildcards.set not in IMAGE_SETS:
        return []  # a crop set is made by the workflow, not listed
    return [
        [r.id, r.path, r.reason] for r in image_listing(RESULTS, wildcards.set).rejects
    ]


def shard_names(run, set_name):
    """Shards of a set; a crop set has the shards of the queries it was cut from."""
    listed = "queries" if set_name in CROP_SETS else set_name
    return [shard_name(i) for i in range(set_shard_count(run, listed))]


def shard_image_table(wildcards):
    """[id, path, fingerprint] rows of one of the main run's shards: a parameter, not input
    files (see inputs.py), so any change to the table reruns exactly this shard's ingest. The
    development set is made in the same run: its ingest jobs list it (development_shard).
    """
    if wildcards.run != RESULTS:
        return []
    return [
        [e.id, e.path, e.fingerprint]
        for e in image_shards(wildcards.run, wildcards.set)[wildcards.shard]
    ]


def development_shard(wildcards):
    """What a development-run ingest job lists: the set's folder, its shard and the shard
    count; empty for the main run. A remade set reruns these jobs through their input.
    """
    if wildcards.run == RESULTS:
        return {}
    return {
        "folder": image_source(wildcards.run, wildcards.set),
        "shard": wildcards.shard,
        "n_shards": set_shard_count(wildcards.run, wildcards.set),
    }


def synthesized_images(wildcards):
    """The development set as an input of its ingest jobs (the main run's images are listed in
    a parameter only, see shard_image_table)."""
    return [] if wildcards.run == RESULTS else [DEVELOPMENT_DATA]


def set_shard_files(run, set_name, pattern):
    """``pattern`` (with {run}, {set}, {shard}) formatted for every shard of a run's set."""
    return [
        pattern.format(run=run, set=set_name, shard=shard)
        for shard in shard_names(run, set_name)
    ]


def image_set_files(suffix):
    """Input function: a per-shard image-shard file with ``suffix`` for every shard of {set}."""

    def files(wildcards):
        pattern = f"{{run}}/images/{{set}}/{{shard}}{suffix}"
        return set_shard_files(RESULTS, wildcards.set, pattern)

    return files


def reference_groups(run):
    """Group name -> reference shard names searched together by one local-search job."""
    per_job = config["local"]["reference_shards_per_job"]
    return group_shards(shard_names(run, "references"), per_job)


def uses_local_ivf():
    return config["local"]["index"]["type"] == "ivf"


def reference_group_index(wildcards):
    """What a local search job reads of its reference shards: their inverted lists (ivf) or
    their SIFT shards (flat)."""
    pattern = (
        "{run}/index/local/{shard}.h5"
        if uses_local_ivf()
        else "{run}/sift/references/{shard}.h5"
    )
    return [
        pattern.format(run=wildcards.run, shard=shard)
        for shard in reference_groups(wildcards.run)[wildcards.group]
    ]


def local_query_cells(wildcards):
    """The query shard's coarse cells (ivf; a flat search has none), assigned once per query
    shard by assign_local_cells for every reference group's search."""
    run, view, shard = wildcards.run, wildcards.view, wildcards.shard
    return [f"{run}/search/local/{view}/{shard}.cells.h5"] if uses_local_ivf() else []


def local_search_gpus(wildcards):
    """The inverted file searches on CPU (a few cells per descriptor); the exact flat scan is
    what a GPU speeds up."""
    wants_gpu = config["local"]["search"]["use_gpu"] != "never"
    return 0 if uses_local_ivf() or not wants_gpu else 1


def reference_scale(wildcards):
    """The reference count rounded to a power of two: what nlist: auto is sized by, so the
    coarse quantizer is refitted only when the collection about doubles, not per new image.
    """
    count = image_count(wildcards.run, "references")
    return 1 << max(0, round(math.log2(max(count, 1))))


def query_shard_neighbors(wildcards):
    run, view, shard = wildcards.run, wildcards.view, wildcards.shard
    return [
        f"{run}/search/local/{view}/{shard}/{group}.h5"
        for group in reference_groups(run)
    ]


def active_sets():
    return [name for name in IMAGE_SETS if name != "training" or config["training"]]


def final_outputs(wildcards):
    """Targets of the default target (all): ingest summaries, predictions, the gallery and, with
    ground truth, the evaluation."""
    targets = [f"{RESULTS}/images/{name}/summary.json" for name in active_sets()]
    targets += [f"{RESULTS}/predictions.csv", f"{RESULTS}/report/gallery.html"]
    if config["overlay"]["detector"] == "train":
        targets.append(f"{RESULTS}/overlay/detector_metrics.json")
    if config["ground_truth"]:
        targets += evaluation_files()
    if config["review_labels"]:
        targets += review_evaluation_files()
    return targets


def evaluation_files():
    names = ("metrics.json", "pr_curve.png", "ablation.csv", "edit_recall.csv")
    return [f"{RESULTS}/eval/{name}" for name in names]


def review_evaluation_files():
    return [
        f"{RESULTS}/eval/review/{name}" for name in ("metrics.json", "pr_curve.png")
    ]


def reference_sift_shards(wildcards):
    return set_shard_files(
        run_of(wildcards), "references", "{run}/sift/{set}/{shard}.h5"
    )


def verified_mirror_features(wildcards):
    """The SIFT shard of the mirrored {view} images that verification matches too, or none
    (verify.try_flip off)."""
    if not config["verify"]["try_flip"]:
        return []
    return f"{wildcards.run}/sift/{wildcards.view}_mirrored/{wildcards.shard}.h5"


def pair_tables(run, view):
    """A run's pair tables of ``view``: the full queries, or the local crops (their own SIFT
    matches) when the crop-local branch runs."""
    if view == "crops_local" and not crop_branch("local"):
        return []
    return set_shard_files(run, "queries", f"{{run}}/verify/{view}/{{shard}}.pairs.csv")


def query_pair_tables(wildcards):
    return pair_tables(RESULTS, "queries")


def crop_pair_tables(wildcards):
    return pair_tables(RESULTS, "crops_local")


# --- Global branch ----------------------------------------------------------------------------


# Backends computed on the CPU by rules of their own; every other backend is a neural network
# (rule embed_images).
WEIGHTS_FREE_BACKENDS = ("vlad", "layout")


def models_with_backend(backend):
    """Names of the configured models of ``backend`` (``neural``: every network backend), as
    a wildcard regex."""
    names = [
        name
        for name, spec in config["models"].items()
        if spec["backend"] == backend
        or (backend == "neural" and spec["backend"] not in WEIGHTS_FREE_BACKENDS)
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


# Checked when the workflow is parsed: an input function's error on a file that already exists
# is not reported by Snakemake (the file is taken as a source), so a typo would pass silently.
global_models()


def model_spec(wildcards):
    """A model's settings as configured, backend included (so a new backend reruns it); a
    trained model's are those of the resnet_gem model it is embedded as (rules/train.smk).
    """
    if config["models"][wildcards.model]["backend"] == "train":
        return trained_embedding_spec(wildcards.model)
    return dict(config["models"][wildcards.model])


def model_params(wildcards):
    """A weights-free model's settings without its backend name (the backend picks the
    rule)."""
    spec = model_spec(wildcards)
    spec.pop("backend")
    return spec


def codebook_params(wildcards):
    """The VLAD settings the codebook depends on (not ``power`` nor ``min_descriptors``,
    applied when encoding)."""
    spec = model_params(wildcards)
    spec.pop("power", None)
    spec.pop("min_descriptors", None)
    return spec


def model_weights(wildcards):
    """The weights file as an input, so replacing it reruns that model's embeddings."""
    if config["models"][wildcards.model]["backend"] == "train":
        return [trained_descriptor(wildcards.model)]
    weights = config["models"][wildcards.model].get("weights", "")
    return [weights] if weights else []


def fit_set(run):
    """Set that codebooks and PCA are fitted on: training when given, else the references."""
    return "training" if image_source(run, "training") else "references"


def fit_sift_shards(wildcards):
    run = wildcards.run
    return set_shard_files(run, fit_set(run), "{run}/sift/{set}/{shard}.h5")


def fit_embedding_shards(wildcards):
    run = wildcards.run
    pattern = f"{{run}}/embeddings/{wildcards.model}/{{set}}/{{shard}}.h5"
    return set_shard_files(run, fit_set(run), pattern)


def reference_embedding_shards(wildcards):
    """Projected reference shards of a model (all of them: DBA and the search read every one)."""
    pattern = f"{{run}}/projected/{wildcards.model}/{{set}}/{{shard}}.h5"
    return set_shard_files(wildcards.run, "references", pattern)


def searched_reference_shards(wildcards):
    """What the global search reads: DBA-augmented references when DBA is on."""
    if config["global"]["dba"]["k"] == 0:
        return reference_embedding_shards(wildcards)
    pattern = f"{{run}}/augmented/{wildcards.model}/{{set}}/{{shard}}.h5"
    return set_shard_files(wildcards.run, "references", pattern)


def candidate_sources(view):
    """(branch, candidates file pattern) pairs verified with the SIFT features of ``view``.

    The full query (view ``queries``) verifies the local branch, the local search of the
    mirrored query (``local_mirrored``, when on), every global model and the global models run
    on the global crops (branches ``crop_<model>``); the local crops (view ``crops_local``)
    verify their own local-search candidates.
    """
    search = "{run}/search"
    if view == "crops_local":
        return [("local", f"{search}/local/crops_local/{{shard}}.candidates.csv")]
    sources = [("local", f"{search}/local/queries/{{shard}}.candidates.csv")]
    if config["local"]["mirrored_queries"]:
        pattern = f"{search}/local/queries_mirrored/{{shard}}.candidates.csv"
        sources.append(("local_mirrored", pattern))
    for model in global_models():
        sources.append(
            (model, f"{search}/global/{model}/queries/{{shard}}.candidates.csv")
        )
    if crop_branch("global"):
        for model in global_models():
            pattern = f"{search}/global/{model}/crops_global/{{shard}}.candidates.csv"
            sources.append((f"crop_{model}", pattern))
    return sources


def query_candidate_tables(wildcards):
    return [
        pattern.format(run=wildcards.run, shard=wildcards.shard)
        for _, pattern in candidate_sources(wildcards.view)
    ]


def candidate_branches(wildcards):
    return [branch for branch, _ in candidate_sources(wildcards.view)]


def set_embedding_shards(wildcards):
    pattern = f"{{run}}/embeddings/{wildcards.model}/{{set}}/{{shard}}.h5"
    return set_shard_files(RESULTS, wildcards.set, pattern)


# --- Overlay detection and crop branches ------------------------------------------------------


def crop_branch(name):
    """Whether the crop branch ``name`` (global or local) runs: a detector is configured and the
    branch is switched on."""
    overlay = config["overlay"]
    return overlay["detector"] != "none" and overlay["branches"][name]


def overlay_detector_weights(wildcards):
    """The detector weights: trained by the workflow (in the main run, shared by the
    development run), or the file the config names; none for the rectangle finder."""
    detector = config["overlay"]["detector"]
    if detector == "rectangles":
        return []
    return f"{RESULTS}/overlay/detector.pt" if detector == "train" else detector


def overlay_detector_gpus(wildcards):
    """A YOLO detector runs on a leased GPU; the rectangle finder is CPU work and holds none."""
    return 0 if config["overlay"]["detector"] == "rectangles" else 1


def fit_image_shards(wildcards):
    return set_shard_files(RESULTS, fit_set(RESULTS), "{run}/images/{set}/{shard}.h5")


# --- Fusion and report ------------------------------------------------------------------------


def fusion_params():
    """The fusion settings the scoring reads (fusion.development only feeds fit_fusion)."""
    return {k: v for k, v in config["fusion"].items() if k != "development"}


def fusion_model(wildcards):
    """The logistic fusion model (method logistic): the file the config names, or the one rule
    fit_fusion fits on a labeled development run."""
    fusion = config["fusion"]
    if fusion["method"] != "logistic":
        return []
    if fusion["model"]:
        return [fusion["model"]]
    if not has_development() and not config["review_labels"]:
        raise WorkflowError(
            "fusion.method is 'logistic' but there is no fusion.model, no "
            "fusion.development.run, no training set to make a development run from and no "
            "review_labels"
        )
    return [f"{RESULTS}/fusion/model.json"]


def given_development_run():
    return config["fusion"]["development"]["run"]


def has_development():
    """Whether fit_fusion has a development run: a finished one the config names, or one made
    from the training set."""
    return bool(given_development_run() or config["training"])


def development_pair_tables(view):
    """Pair tables fit_fusion learns from: of the development run in this DAG, or of the
    finished run the config names (listed when planning); none without a development run.
    """

    def tables(wildcards):
        if not has_development():
            return []
        if not given_development_run():
            return pair_tables(DEVELOPMENT, view)
        run = Path(given_development_run())
        found = sorted(
            str(p) for p in (run / RESULTS / "verify" / view).glob("*.pairs.csv")
        )
        if view == "queries" and not found:
            raise WorkflowError(
                f"fusion.development.run {str(run)!r} has no {RESULTS}/verify/queries/"
                "*.pairs.csv: run the workflow there first (README, 'Fitting the fusion')"
            )
        return found

    return tables


def development_ground_truth(wildcards):
    if not has_development():
        return []
    if not given_development_run():
        return rules.synthesize_development.output.ground_truth
    truth = config["fusion"]["development"]["ground_truth"]
    run = Path(given_development_run())
    return truth or str(run / RESULTS / "synthetic" / "ground_truth.csv")


def review_labels(wildcards):
    """The reviewer's labels (the gallery's export), or none."""
    return [config["review_labels"]] if config["review_labels"] else []


def review_pair_tables(view):
    """This run's pair tables of ``view`` for fit_fusion, when review labels make some of
    them labeled training data; none otherwise."""

    def tables(wildcards):
        return pair_tables(RESULTS, view) if config["review_labels"] else []

    return tables


def training_source():
    return config["training"]


def training_listing(wildcards):
    """A digest of the training set's (id, path, fingerprint) listing: a parameter of the
    development set's synthesis, so that a changed training set remakes it (one short value,
    where the listing itself may hold a million rows)."""
    digest = hashlib.sha256()
    for entries in image_shards(RESULTS, "training").values():
        for entry in entries:
            digest.update(f"{entry.id}\t{entry.path}\t{entry.fingerprint}\n".encode())
    return digest.hexdigest()


def gallery_query_images(wildcards):
    return set_shard_files(RESULTS, "queries", "{run}/images/{set}/{shard}.h5")


def gallery_reference_images(wildcards):
    return set_shard_files(RESULTS, "references", "{run}/images/{set}/{shard}.h5")


def gallery_query_features(wildcards):
    return set_shard_files(RESULTS, "queries", "{run}/sift/{set}/{shard}.h5")


def gallery_mirrored_query_features(wildcards):
    """The mirrored queries' SIFT shards the gallery draws mirrored matches from, or none."""
    if not config["verify"]["try_flip"]:
        return []
    return set_shard_files(RESULTS, "queries", "{run}/sift/queries_mirrored/{shard}.h5")


def gallery_metrics(wildcards):
    return [f"{RESULTS}/eval/metrics.json"] if config["ground_truth"] else []


# --- Trained descriptors (models.<name>: {backend: train}) -------------------------------------


def trained_models():
    """Names of the configured models that the workflow trains, as a wildcard regex."""
    names = [n for n, spec in config["models"].items() if spec["backend"] == "train"]
    return "|".join(names) if names else "(?!)"  # "(?!)" matches nothing


def trained_descriptor(model):
    """The weights file rule train_descriptor writes for ``model`` (shared by the main and
    the development runs: it depends on the training set only)."""
    return f"{RESULTS}/models/{model}/{WEIGHTS_NAME}"


def trained_embedding_spec(model):
    """The resnet_gem entry the embedding runs a trained model with (its trained weights)."""
    spec = config["models"][model]
    return embedding_spec(spec, trained_descriptor(model))


def descriptor_recipe(wildcards):
    """The network and recipe, defaults filled in: a change retrains."""
    return recipe_params(config["models"][wildcards.model])


def training_image_shards(wildcards):
    """The training set's image shards: the descriptor learns from them only, so a new query
    batch or reference never retrains it."""
    if not config["training"]:
        raise WorkflowError(
            f"model {wildcards.model!r} has backend 'train' but the config has no training "
            "set: set `training` to a folder of unlabeled images like the references"
        )
    return set_shard_files(RESULTS, "training", "{run}/images/{set}/{shard}.h5")


def descriptor_init(wildcards):
    """The checkpoint the trunk starts from, as an input (replacing it retrains), or none."""
    init = descriptor_recipe(wildcards)["init"]
    return [init] if init else []


def descriptor_gpus(wildcards):
    """One GPU unless the recipe runs on the CPU (then it holds none another job could use)."""
    return 0 if descriptor_recipe(wildcards)["train"]["device"] == "cpu" else 1


def descriptor_threads(wildcards):
    """The training process and its data-loader workers (decoding and editing the views)."""
    return descriptor_recipe(wildcards)["train"]["num_workers"] + 1
