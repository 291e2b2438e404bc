"""Evaluation: one job per (cell, benchmark) with lm-evaluation-harness, plus the base models' reference rows."""


# What an evaluation job runs: the benchmark's entry without its primary metric, which only the analysis reads
# (every metric is kept), so that changing it reruns no evaluation.
EVALUATION_SPECS = {name: as_json({key: value for key, value in spec.items() if key != "metric"})
                    for name, spec in config["benchmarks"].items()}
TRUST_REMOTE_CODE = {name: "--trust-remote-code" if spec["trust_remote_code"] else ""
                     for name, spec in config["models"].items()}


# One command for a fine-tuned cell and a base model; each rule says where its model is and what it is.
EVALUATE = (
    "{params.offline} python scripts/evaluate.py --model-path {params.model_path:q} {params.local} {params.revision}"
    " --cell {params.cell:q} --benchmark {wildcards.benchmark} --spec {params.spec:q} --settings {params.settings:q}"
    " {params.trust_remote_code} --output {output.scores:q} --output-json {output.results:q} > {log:q} 2>&1"
)


rule evaluate:
    input:
        model=f"{RESULTS}/models/{CELL}/model",
        prefetched=PREFETCHED_BENCHMARK,
    output:
        scores=f"{RESULTS}/eval/{CELL}/{{benchmark}}.parquet",
        results=f"{RESULTS}/eval/{CELL}/{{benchmark}}.json",
    log:
        f"{LOGS}/evaluate/{CELL}/{{benchmark}}.log",
    benchmark:
        f"{COSTS}/evaluate/{CELL}/{{benchmark}}.tsv"
    params:
        model_path=lambda wildcards, input: input.model,
        local="--local-model",
        revision="",
        cell=cell_json,
        spec=lambda wildcards: EVALUATION_SPECS[wildcards.benchmark],
        settings=as_json(config["evaluation"]),
        offline=OFFLINE,
        trust_remote_code=lambda wildcards: TRUST_REMOTE_CODE[wildcards.model],
    conda:
        "../../envs/evaluate.yaml"
    shell:
        EVALUATE


rule evaluate_base:
    input:
        model=base_model_input,
        prefetched=PREFETCHED_BENCHMARK,
        model_cache=prefetched_model,
    output:
        scores=f"{RESULTS}/eval/{{model}}/base/{{benchmark}}.parquet",
        results=f"{RESULTS}/eval/{{model}}/base/{{benchmark}}.json",
    log:
        f"{LOGS}/evaluate_base/{{model}}/{{benchmark}}.log",
    benchmark:
        f"{COSTS}/evaluate_base/{{model}}/{{benchmark}}.tsv"
    params:
        model_path=base_model_path,
        local=lambda wildcards: "--local-model" if base_model_files(wildcards.model) else "",
        revision=revision_flag,
        cell=lambda wildcards: as_json(dict(model=wildcards.model, dataset=None, plw=None, seed=None)),
        spec=lambda wildcards: EVALUATION_SPECS[wildcards.benchmark],
        settings=as_json(config["evaluation"]),
        offline=OFFLINE,
        trust_remote_code=lambda wildcards: TRUST_REMOTE_CODE[wildcards.model],
    conda:
        "../../envs/evaluate.yaml"
    shell:
        EVALUATE
