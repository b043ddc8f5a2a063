from snakemake.utils import min_version, validate

min_version("9.0")


# The defaults, always the workflow's own (also under --directory); user files and --config are
# merged over them key by key.
configfile: f"{workflow.basedir}/config/config.yaml"


validate(config, "config/schema.yaml")


include: "rules/common.smk"
include: "rules/synthesize.smk"
include: "rules/ingest.smk"
include: "rules/detect.smk"
include: "rules/sift.smk"
include: "rules/embed.smk"
include: "rules/search.smk"
include: "rules/verify.smk"
include: "rules/fuse.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs,
