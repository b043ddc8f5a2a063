import sys

import yaml
from snakemake.utils import min_version, validate

min_version("9.0")

# This workflow's folder, also when another workflow includes it as a module (workflow.basedir
# is then the including workflow's folder).
WORKFLOW_DIR = workflow.current_basedir.get_path_or_uri(secret_free=True)

# The copydetect package beside the rule scripts, importable by the rules (rules/common.smk) from
# a checkout that is not pip-installed; rule scripts get that folder from Snakemake itself.
sys.path.insert(0, f"{WORKFLOW_DIR}/workflow_scripts")

from copydetect.params import fill_defaults

DEFAULTS = f"{WORKFLOW_DIR}/config/config.yaml"


# The defaults, always the workflow's own (also under --directory); user files and --config are
# merged over them key by key.
configfile: DEFAULTS


# As a module given a config (`module copydetect: config: ...`), Snakemake skips configfile:
# the defaults then fill in whatever the including workflow's config leaves out.
with open(DEFAULTS) as defaults_file:
    fill_defaults(config, yaml.safe_load(defaults_file))


validate(config, "config/schema.yaml")


include: "rules/common.smk"
include: "rules/synthesize.smk"
include: "rules/ingest.smk"
include: "rules/detect.smk"
include: "rules/sift.smk"
include: "rules/embed.smk"
include: "rules/train.smk"
include: "rules/search.smk"
include: "rules/verify.smk"
include: "rules/fuse.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs,
