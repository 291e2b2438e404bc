"""Scores, the mixed-effects regression (Table 3) and the figures; light, so they run on the login node."""


localrules:
    collect_scores,
    fit_regression,
    make_figures,


rule collect_scores:
    input:
        all_eval_results(),
    output:
        f"{RESULTS}/scores.parquet",
    log:
        f"{LOGS}/collect_scores/collect_scores.log",
    params:
        expected=as_json(expected_evaluations()),
        benchmarks=as_json(config["benchmarks"]),
        power=config["analysis"]["wp_power"],
    conda:
        "../../envs/analysis.yaml"
    shell:
        "python scripts/collect_scores.py --expected {params.expected:q} --benchmarks {params.benchmarks:q}"
        " --wp-power {params.power} --output {output:q} > {log:q} 2>&1"


rule fit_regression:
    input:
        f"{RESULTS}/scores.parquet",
    output:
        parquet=f"{RESULTS}/tables/regression.parquet",
        markdown=report(f"{RESULTS}/tables/regression.md", caption="../report/regression.rst", category="Tables"),
    log:
        f"{LOGS}/fit_regression/fit_regression.log",
    params:
        formula=config["analysis"]["formula"],
        power=config["analysis"]["wp_power"],
        bootstrap=config["analysis"]["bootstrap_samples"],
    conda:
        "../../envs/analysis.yaml"
    shell:
        "python scripts/fit_regression.py --scores {input:q} --formula {params.formula:q} --wp-power {params.power}"
        " --bootstrap-samples {params.bootstrap} --parquet {output.parquet:q} --markdown {output.markdown:q}"
        " > {log:q} 2>&1"


rule make_figures:
    input:
        scores=f"{RESULTS}/scores.parquet",
        regression=f"{RESULTS}/tables/regression.parquet",
    output:
        aggregate=[report(path, caption="../report/aggregate_vs_wp.rst", category="Figures")
                   for path in FIGURES if "aggregate" in path],
        benchmarks=[report(path, caption="../report/benchmarks_vs_wp.rst", category="Figures")
                    for path in FIGURES if "benchmarks" in path],
    log:
        f"{LOGS}/make_figures/make_figures.log",
    params:
        power=config["analysis"]["wp_power"],
    conda:
        "../../envs/analysis.yaml"
    shell:
        "python scripts/make_figures.py --scores {input.scores:q} --regression {input.regression:q}"
        " --wp-power {params.power} --aggregate {output.aggregate:q} --benchmarks {output.benchmarks:q}"
        " > {log:q} 2>&1"


onsuccess:
    print(f"\nResults are in {os.path.abspath(RESULTS)}: scores.parquet, tables/ (dataset_stats.md, "
          "regression.md), figures/. HTML report: snakemake --report results/report.html")


onerror:
    # With --keep-going, collect what finished into scores.parquet and list the missing cells there.
    if workflow.execution_settings.keep_going and not workflow.dryrun:
        import subprocess

        subprocess.run(
            ["python", "scripts/collect_scores.py", "--allow-missing",
             "--expected", as_json(expected_evaluations()), "--benchmarks", as_json(config["benchmarks"]),
             "--wp-power", str(config["analysis"]["wp_power"]), "--output", f"{RESULTS}/scores.parquet"],
            check=False,
        )
        # Dated 1970, so the next run sees it as older than its inputs and rebuilds it with the missing
        # evaluations, instead of taking this partial table as up to date.
        if os.path.exists(f"{RESULTS}/scores.parquet"):
            os.utime(f"{RESULTS}/scores.parquet", (1, 1))  # 0 would read as "no time"
        print(f"--keep-going: {RESULTS}/scores.parquet was built from the evaluations that finished; "
              "its rows with status 'missing' list the rest.")
