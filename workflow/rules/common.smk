"""What every stage shares: the grid, the paths of results, wildcard constraints and config helpers.

Each stage's own input functions, params and commands live with its rules (workflow/rules/<stage>.smk)."""

import json
import os
import re
import shlex
import sys

# light modules (no torch at parse time), on the path that the Snakefile set
from plw.config_checks import is_local_path
from plw.grid import CELL, completion_weight_suffix, expected_evaluations, format_plw, typed_cell

# Scripts run as `python scripts/X.py`: find the interpreter that runs Snakemake first (a --sdm conda
# environment, activated per job, still comes before it).
envvars:
    "PATH",


SEARCH_PATH = os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])
os.environ["PATH"] = SEARCH_PATH  # two statements: the linter's regex reads one line as a single name

RESULTS = "results"
LOGS = f"{RESULTS}/logs"
# Compute nodes often have no internet: their jobs read the cache that the prefetch localrules filled, one
# marker per Hub model and per benchmark (plain inputs: with ancient() ones, Snakemake 9 skips the jobs below
# a rerun prefetch job, even those whose outputs are missing).
PREFETCH = f"{RESULTS}/prefetch"
COSTS = f"{RESULTS}/benchmarks"  # Snakemake's benchmark: file of every training and evaluation job
OFFLINE = "HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1"

MODELS = list(config["models"])
DATASETS = list(config["datasets"])
PLWS = [format_plw(plw) for plw in config["plw"]]
# training.completion_weight: one number, or several (an axis of the grid); the {cw} wildcard is each one's path
# suffix ('' for 1), mapped to the value the trainings get: one number as the config writes it, and in a list the
# weight 1 as the schema's default writes it (1, not 1.0), so that the trainings of weight 1 keep the settings of a
# sweep without the axis
_weights = config["training"]["completion_weight"]
COMPLETION_WEIGHTS = ({completion_weight_suffix(_weights): _weights} if not isinstance(_weights, list) else
                      {completion_weight_suffix(weight): 1 if weight == 1 else weight for weight in _weights})
SEEDS = [str(seed) for seed in config["seeds"]]
BENCHMARKS = list(config["benchmarks"])
JUDGED = list(config["judged_benchmarks"])  # scored by a judge's win rate, as results/eval/<cell>/<name>.parquet
# the grid as plw.grid and the analysis scripts take it
GRID = dict(results=RESULTS, models=MODELS, datasets=DATASETS, completion_weights=list(COMPLETION_WEIGHTS.values()),
            plws=PLWS, seeds=SEEDS, benchmarks=BENCHMARKS, judged_benchmarks=JUDGED,
            evaluate_base_models=config["evaluation"]["evaluate_base_models"])


def _one_of(names):
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    model=_one_of(MODELS),
    dataset=_one_of(DATASETS),
    plw=_one_of(PLWS),
    cw=f"({_one_of(COMPLETION_WEIGHTS)})",  # may be empty: the paper's completion weight 1
    seed=_one_of(SEEDS),
    benchmark=_one_of(BENCHMARKS),
    judged=_one_of(JUDGED),
    judge=_one_of(config["judges"]),


def as_json(value):
    """Config sections travel to scripts as one JSON argument (quoted with :q in every shell command)."""
    return json.dumps(value, sort_keys=True)


# ---- base models: data (tokenizer), training and evaluation ------------------------------------------


def base_model(model):
    """Where the base model is loaded from: a built demo model, a local directory, or a Hub id."""
    spec = config["models"][model]
    if "build" in spec:
        return f"{RESULTS}/base_models/{model}"
    return os.path.expanduser(spec["source"])


def base_model_files(model):
    """The base model as a file input when it is on disk, so a missing directory fails before any job runs."""
    path = base_model(model)
    return [path] if "build" in config["models"][model] or is_local_path(path) else []


def base_model_path(wildcards):
    return base_model(wildcards.model)


def base_model_input(wildcards):
    return base_model_files(wildcards.model)


def revision_flag(wildcards):
    """The model's Hub revision as a script option, where the config names one."""
    revision = config["models"][wildcards.model].get("revision")
    return f"--revision {shlex.quote(revision)}" if revision else ""


def prefetched_model(wildcards):
    """The prefetch marker of a Hub model (none for a model on disk: local or built)."""
    return [] if base_model_files(wildcards.model) else [f"{PREFETCH}/models/{wildcards.model}.json"]


PREFETCHED_BENCHMARK = f"{PREFETCH}/benchmarks/{{benchmark}}.json"


# ---- datasets: data and training ---------------------------------------------------------------------


def is_derived(dataset):
    return "derive" in config["datasets"][dataset]


def normalized_dataset(dataset):
    return f"{RESULTS}/data/{dataset}.parquet"


def training_data_input(wildcards):
    return training_data(wildcards.model, wildcards.dataset)


def training_data(model, dataset):
    """Derived datasets depend on the model's tokenizer, so they are built per model."""
    if is_derived(dataset):
        return f"{RESULTS}/data/{model}/{dataset}.parquet"
    return normalized_dataset(dataset)


def cell_json(wildcards):
    """A fine-tuned cell as the scripts take it (--cell): its wildcards, PLW and seed as numbers."""
    return as_json(typed_cell(dict(model=wildcards.model, dataset=wildcards.dataset, plw=wildcards.plw,
                                   cw=wildcards.cw, seed=wildcards.seed)))


# ---- the evaluations of the grid: evaluation and analysis -------------------------------------------


ALL_EVAL_RESULTS = [row["path"] for row in expected_evaluations(GRID)]


# ---- the analysis' results, and the workflow's targets -----------------------------------------------

DATASET_STATS = f"{RESULTS}/tables/dataset_stats.md"
SCORES = f"{RESULTS}/scores.parquet"
REGRESSION = {"parquet": f"{RESULTS}/tables/regression.parquet", "markdown": f"{RESULTS}/tables/regression.md"}
# the beta mixed model (R's glmmTMB), where analysis.beta_model lets it run (BETA_MODEL, set in analysis.smk)
BETA_REGRESSION = {"parquet": f"{RESULTS}/tables/beta_regression.parquet",
                   "markdown": f"{RESULTS}/tables/beta_regression.md"}
FIGURES = [f"{RESULTS}/figures/{name}.{ext}" for name in ("aggregate_vs_wp", "benchmarks_vs_wp")
           for ext in ("png", "pdf")]
COST = {"parquet": f"{RESULTS}/tables/cost.parquet", "markdown": f"{RESULTS}/tables/cost.md"}
MECHANISMS = {"parquet": f"{RESULTS}/tables/mechanisms.parquet", "markdown": f"{RESULTS}/tables/mechanisms.md",
              "figure": [f"{RESULTS}/figures/mechanisms_vs_wp.{ext}" for ext in ("png", "pdf")]}


def final_targets():
    """The tables, figures and scores, and every evaluation result: one deleted by hand is made again. The beta
    regression's table only where the beta model is fitted (analysis.beta_model, R)."""
    beta = [BETA_REGRESSION["markdown"]] if BETA_MODEL else []
    return [*ALL_EVAL_RESULTS, DATASET_STATS, SCORES, REGRESSION["markdown"], *beta, *FIGURES, COST["markdown"],
            MECHANISMS["markdown"], *MECHANISMS["figure"]]
