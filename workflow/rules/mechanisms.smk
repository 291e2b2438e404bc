"""Why PLW matters, per cell: the variability of its training loss and how far fine-tuning moved its weights from
the base model's (a job per cell that reads two models' weight files, tensor by tensor), and how much of its
training completions it reproduces (a job per cell that generates, on a GPU where there is one); then one table
and one figure against wp."""

from plw.grid import cells, mechanism_result, memorization_result


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
        cell=cell_json,
        base=base_model_path,
        revision=revision_flag,
        minkowski_p=config["analysis"]["minkowski_p"],
        offline=OFFLINE,
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.offline} python scripts/mechanisms.py --cell {params.cell:q} --base-model {params.base:q}"
        " {params.revision} --model {input.model:q} --train-log {input.train_log:q}"
        " --minkowski-p {params.minkowski_p} --output {output:q} > {log:q} 2>&1"


rule memorization:
    input:
        model=f"{RESULTS}/models/{CELL}/model",
        data=training_data_input,
    output:
        f"{RESULTS}/memorization/{CELL}.parquet",
    log:
        f"{LOGS}/memorization/{CELL}.log",
    params:
        cell=cell_json,
        records=config["analysis"]["memorization_records"],
        max_new_tokens=config["analysis"]["memorization_max_new_tokens"],
        offline=OFFLINE,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "{params.offline} python scripts/memorization.py --cell {params.cell:q} --model {input.model:q}"
        " --data {input.data:q} --records {params.records} --max-new-tokens {params.max_new_tokens}"
        " --output {output:q} > {log:q} 2>&1"


rule collect_mechanisms:
    input:
        [path for cell in cells(GRID) for path in (mechanism_result(GRID, **cell), memorization_result(GRID, **cell))],
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
