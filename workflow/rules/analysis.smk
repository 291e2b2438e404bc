"""Scores, the mixed-effects regression (Table 3), the beta mixed model, the figures and the cost table; light, so
they run on the login node."""

import subprocess

from snakemake.settings.types import DeploymentMethod

from plw.config_checks import beta_model_unavailable
from plw.grid import costed_jobs

localrules:
    collect_scores,
    fit_regression,
    beta_regression,
    make_figures,
    cost_table,


# The analysis maximizes each benchmark's primary metric only once check_metric has accepted it.
CHECKED_METRICS = [f"{PREFETCH}/metrics/{benchmark}.json" for benchmark in BENCHMARKS]

# The analysis steps as commands: the rules run them, and onerror (--keep-going) runs them on what finished.
PRIMARY_METRICS = {**config["benchmarks"], **{name: {"metric": "win_rate"} for name in JUDGED}}
COLLECT_SCORES = ["python", "scripts/collect_scores.py", "--grid", as_json(GRID), "--benchmarks", as_json(PRIMARY_METRICS), "--wp-power", str(config["analysis"]["wp_power"]),
                  "--output", SCORES]
FIT_REGRESSION = ["python", "scripts/fit_regression.py", "--scores", SCORES,
                  "--formula", config["analysis"]["formula"], "--estimation", config["analysis"]["estimation"],
                  "--wp-power", str(config["analysis"]["wp_power"]),
                  "--bootstrap-samples", str(config["analysis"]["bootstrap_samples"]),
                  "--parquet", REGRESSION["parquet"], "--markdown", REGRESSION["markdown"]]
MAKE_FIGURES = ["python", "scripts/make_figures.py", "--scores", SCORES, "--regression", REGRESSION["parquet"],
                "--wp-power", str(config["analysis"]["wp_power"]),
                "--aggregate", *[path for path in FIGURES if "aggregate" in path],
                "--benchmarks", *[path for path in FIGURES if "benchmarks" in path]]

# analysis.beta_model: true fits the beta model or refuses to plan; auto fits it where R can (with --sdm conda, its
# environment envs/r.yaml brings R), else leaves it out and says so; false leaves it out. Only the main process asks
# R: the rule is local, and a Slurm job's own Snakemake (on a compute node, maybe without R) runs one other job.
# R is asked where glmmTMB and jsonlite are installed, without loading them (plw.config_checks): about 0.1 s a parse.
BETA_MODEL_SETTING = config["analysis"]["beta_model"]
BETA_MODEL_OFF = "analysis.beta_model is false" if BETA_MODEL_SETTING is False else None  # why it is left out
if (BETA_MODEL_OFF is None and workflow.is_main_process
        and DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method):
    BETA_MODEL_OFF = beta_model_unavailable()
    if BETA_MODEL_OFF and BETA_MODEL_SETTING is True:
        raise WorkflowError(f"config analysis.beta_model is true, but the beta model cannot be fitted here: "
                            f"{BETA_MODEL_OFF}. Install R with glmmTMB and jsonlite (Debian: apt-get install "
                            "r-cran-glmmtmb r-cran-jsonlite), run with --sdm conda (envs/r.yaml), or set "
                            "analysis.beta_model to auto or false.")
    if BETA_MODEL_OFF:
        BETA_MODEL_OFF += " (analysis.beta_model: auto)"
        print(f"The beta regression is left out: {BETA_MODEL_OFF}.", file=sys.stderr)
BETA_MODEL = BETA_MODEL_OFF is None


rule collect_scores:
    input:
        ALL_EVAL_RESULTS,
        CHECKED_METRICS,
    output:
        SCORES,
    log:
        f"{LOGS}/collect_scores/collect_scores.log",
    params:
        command=shlex.join(COLLECT_SCORES),
    conda:
        "../../envs/analysis.yaml"
    shell:
        "{params.command} > {log:q} 2>&1"


rule fit_regression:
    input:
        SCORES,
    output:
        parquet=REGRESSION["parquet"],
        markdown=report(REGRESSION["markdown"], caption="../report/regression.rst", category="Tables"),
    log:
        f"{LOGS}/fit_regression/fit_regression.log",
    params:
        command=shlex.join(FIT_REGRESSION),
    conda:
        "../../envs/analysis.yaml"
    shell:
        "{params.command} > {log:q} 2>&1"


rule beta_regression:
    input:
        SCORES,
    output:
        parquet=BETA_REGRESSION["parquet"],
        markdown=report(BETA_REGRESSION["markdown"], caption="../report/beta_regression.rst", category="Tables"),
    log:
        f"{LOGS}/beta_regression/beta_regression.log",
    params:
        wp_power=config["analysis"]["wp_power"],
    conda:
        "../../envs/r.yaml"
    shell:
        "python scripts/beta_regression.py --scores {input:q} --wp-power {params.wp_power} --parquet {output.parquet:q}"
        " --markdown {output.markdown:q} > {log:q} 2>&1"


rule make_figures:
    input:
        scores=SCORES,
        regression=REGRESSION["parquet"],
    output:
        aggregate=[report(path, caption="../report/aggregate_vs_wp.rst", category="Figures")
                   for path in FIGURES if "aggregate" in path],
        benchmarks=[report(path, caption="../report/benchmarks_vs_wp.rst", category="Figures")
                    for path in FIGURES if "benchmarks" in path],
    log:
        f"{LOGS}/make_figures/make_figures.log",
    params:
        command=shlex.join(MAKE_FIGURES),
    conda:
        "../../envs/analysis.yaml"
    shell:
        "{params.command} > {log:q} 2>&1"


rule cost_table:
    input:
        [path for job in costed_jobs(GRID) for path in (job["benchmark_tsv"], job["result"])],
    output:
        parquet=COST["parquet"],
        markdown=report(COST["markdown"], caption="../report/cost.rst", category="Tables"),
    log:
        f"{LOGS}/cost_table/cost_table.log",
    params:
        grid=as_json(GRID),
    conda:
        "../../envs/analysis.yaml"
    shell:
        "python scripts/cost_table.py --grid {params.grid:q} --parquet {output.parquet:q}"
        " --markdown {output.markdown:q} > {log:q} 2>&1"


onsuccess:
    print(f"\nResults are in {os.path.abspath(RESULTS)}: scores.parquet, tables/ (dataset_stats.md, "
          f"regression.md{', beta_regression.md' if BETA_MODEL else ''}, cost.md, mechanisms.md), figures/. "
          "HTML report: snakemake --report results/report.html")
    if not BETA_MODEL:
        print(f"The beta regression was left out: {BETA_MODEL_OFF}.")


onerror:
    # With --keep-going, the analysis of the evaluations that finished: scores.parquet lists the missing cells,
    # and regression.md and the figures describe the same partial data (only once every primary metric passed
    # check_metric: the regression must not maximize a metric that failed it).
    if workflow.execution_settings.keep_going and not workflow.dryrun:
        steps = [[*COLLECT_SCORES, "--allow-missing"]]
        if all(os.path.exists(path) for path in CHECKED_METRICS):
            steps += [FIT_REGRESSION, MAKE_FIGURES]
        built = []
        for command in steps:
            if subprocess.run(command, check=False).returncode:
                print(f"--keep-going: {shlex.join(command[:2])} failed on the partial results")
                break
            built.append(command[1])
        # Dated 1970, so the next run sees them as older than their inputs and rebuilds them with the missing
        # evaluations, instead of taking these partial results as up to date.
        for path in [SCORES, *REGRESSION.values(), *FIGURES]:
            if os.path.exists(path):
                os.utime(path, (1, 1))  # 0 would read as "no time"
        if built:
            print(f"--keep-going: {', '.join(built)} ran on the evaluations that finished; the rows of "
                  f"{SCORES} with status 'missing' list the rest.")
