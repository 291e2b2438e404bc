"""Evaluation: one job per (cell, benchmark) with lm-evaluation-harness, plus the base models' reference rows."""

localrules:
    prefetch_model,
    prefetch_benchmark,
    check_metric,


# The prefetch jobs come first (priority): a wrong task or metric name stops the run before most jobs start.
rule prefetch_model:
    output:
        f"{PREFETCH}/models/{{model}}.json",
    log:
        f"{LOGS}/prefetch_model/{{model}}.log",
    params:
        models=lambda wildcards: as_json({wildcards.model: config["models"][wildcards.model]}),
    priority: 100
    conda:
        # the trainings' environment: a change to it reruns them anyway, one to the evaluation's must not
        "../../envs/train.yaml"
    shell:
        "python scripts/prefetch.py --models {params.models:q} --output {output:q} > {log:q} 2>&1"


rule prefetch_benchmark:
    output:
        f"{PREFETCH}/benchmarks/{{benchmark}}.json",
    log:
        f"{LOGS}/prefetch_benchmark/{{benchmark}}.log",
    params:
        benchmarks=lambda wildcards: as_json({wildcards.benchmark: {"task": benchmark_task(wildcards)}}),
        include_path=INCLUDE_PATH,
    priority: 100
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "python scripts/prefetch.py --benchmarks {params.benchmarks:q} --include-path {params.include_path:q}"
        " --output {output:q} > {log:q} 2>&1"


rule check_metric:
    input:
        prefetched_benchmark,
    output:
        f"{PREFETCH}/metrics/{{benchmark}}.json",
    log:
        f"{LOGS}/check_metric/{{benchmark}}.log",
    params:
        task=benchmark_task,
        metric=lambda wildcards: config["benchmarks"][wildcards.benchmark]["metric"],
        include_path=INCLUDE_PATH,
        offline=OFFLINE,
    priority: 100
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "{params.offline} python scripts/check_metric.py --benchmark {wildcards.benchmark} --task {params.task:q}"
        " --metric {params.metric:q} --include-path {params.include_path:q} --output {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        model=f"{RESULTS}/models/{CELL}/model",
        prefetched=prefetched_benchmark,
    output:
        scores=f"{RESULTS}/eval/{CELL}/{{benchmark}}.parquet",
        results=f"{RESULTS}/eval/{CELL}/{{benchmark}}.json",
    log:
        f"{LOGS}/evaluate/{CELL}/{{benchmark}}.log",
    params:
        cell=lambda wildcards: as_json(dict(model=wildcards.model, dataset=wildcards.dataset,
                                            plw=float(wildcards.plw), seed=int(wildcards.seed))),
        spec=evaluation_spec,
        settings=as_json(config["evaluation"]),
        offline=OFFLINE,
        trust_remote_code=trust_remote_code_flag,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "{params.offline} python scripts/evaluate.py --model-path {input.model:q} --local-model --cell {params.cell:q}"
        " --benchmark {wildcards.benchmark} --spec {params.spec:q} --settings {params.settings:q}"
        " {params.trust_remote_code} --output {output.scores:q} --output-json {output.results:q} > {log:q} 2>&1"


rule evaluate_base:
    input:
        model=base_model_input,
        prefetched=lambda wildcards: [prefetched_benchmark(wildcards), *prefetched_model(wildcards)],
    output:
        scores=f"{RESULTS}/eval/{{model}}/base/{{benchmark}}.parquet",
        results=f"{RESULTS}/eval/{{model}}/base/{{benchmark}}.json",
    log:
        f"{LOGS}/evaluate_base/{{model}}/{{benchmark}}.log",
    params:
        model_path=lambda wildcards: base_model(wildcards.model),
        local=lambda wildcards: "--local-model" if base_model_files(wildcards.model) else "",
        revision=lambda wildcards: (f"--revision {shlex.quote(config['models'][wildcards.model]['revision'])}"
                                    if "revision" in config["models"][wildcards.model] else ""),
        cell=lambda wildcards: as_json(dict(model=wildcards.model, dataset=None, plw=None, seed=None)),
        spec=evaluation_spec,
        settings=as_json(config["evaluation"]),
        offline=OFFLINE,
        trust_remote_code=trust_remote_code_flag,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "{params.offline} python scripts/evaluate.py --model-path {params.model_path:q} {params.local} {params.revision}"
        " --cell {params.cell:q}"
        " --benchmark {wildcards.benchmark} --spec {params.spec:q} --settings {params.settings:q}"
        " {params.trust_remote_code} --output {output.scores:q} --output-json {output.results:q} > {log:q} 2>&1"
