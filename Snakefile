# Prompt-loss-weight (PLW) experiments: data -> fine-tuning per cell -> evaluation per (cell, benchmark)
# -> scores, mixed-effects regression, tables, figures and report. See README.md.

from snakemake.utils import min_version, validate

min_version("9.0")


# The embedded demo is the default; a --configfile replaces it rather than merging into it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/analysis.smk"


rule all:
    input:
        final_targets(),
    default_target: True
