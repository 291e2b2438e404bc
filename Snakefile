# Prompt-loss-weight (PLW) experiments: data -> fine-tuning per cell -> evaluation per (cell, benchmark)
# -> scores, mixed-effects regression, tables, figures and report. See README.md.

import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))
from plw.config_checks import ConfigError, check_config  # light: no torch


min_version("9.0")


# The embedded demo is the default; a --configfile replaces it rather than merging into it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")
# What the schema cannot check (duplicate YAML keys, NaN and -0.0, missing local files, derivations, attention and
# batch settings, the formula), before any job.
try:
    check_config(config, workflow.overwrite_configfiles or ["config/config.yaml"])
except ConfigError as error:
    raise WorkflowError(str(error)) from None


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/prefetch.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/judge.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/mechanisms.smk"


rule all:
    input:
        final_targets(),
    default_target: True
