"""Why PLW matters, per cell: the variability of its training loss and how far fine-tuning moved its weights from
the base model's, then one table and one figure against wp. A job per cell: it reads two models' weight files,
tensor by tensor."""

from plw.grid import cells, mechanism_result


localrules:
    collect_mechanisms,


rule mechanisms:
    input:
        model=f"{RESULTS}/models/{CELL}/model",
        train_log=f"{RESULTS}/models/{CELL}/train_log.parquet",
        base=base_model_input,
        prefetched=prefetched_model,
    output:
        f"{RESULTS}/mechanisms/{CELL}.parquet",
    log:
        f"{LOGS}/mechanisms/{CELL}.log",
    params:
        cell=lambda wildcards: as_json(dict(model=wildcards.model, dataset=wildcards.dataset,
                                            plw=float(wildcards.plw), seed=int(wildcards.seed))),
        base=lambda wildcards: base_model(wildcards.model),
        revision=lambda wildcards: (f"--revision {shlex.quote(config['models'][wildcards.model]['revision'])}"
                                    if "revision" in config["models"][wildcards.model] else ""),
        minkowski_p=config["analysis"]["minkowski_p"],
        offline=OFFLINE,
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.offline} python scripts/mechanisms.py --cell {params.cell:q} --base-model {params.base:q}"
        " {params.revision} --model {input.model:q} --train-log {input.train_log:q}"
        " --minkowski-p {params.minkowski_p} --output {output:q} > {log:q} 2>&1"


rule collect_mechanisms:
    input:
        [mechanism_result(GRID, **cell) for cell in cells(GRID)],
    output:
        parquet=MECHANISMS["parquet"],
        markdown=report(MECHANISMS["markdown"], caption="../report/mechanisms.rst", category="Tables"),
        figure=[report(path, caption="../report/mechanisms.rst", category="Figures")
                for path in MECHANISMS["figure"]],
    log:
        f"{LOGS}/collect_mechanisms/collect_mechanisms.log",
    params:
        grid=as_json(GRID),
        wp_power=config["analysis"]["wp_power"],
    conda:
        "../../envs/analysis.yaml"
    shell:
        "python scripts/collect_mechanisms.py --grid {params.grid:q} --wp-power {params.wp_power}"
        " --parquet {output.parquet:q} --markdown {output.markdown:q} --figure {output.figure:q} > {log:q} 2>&1"
