"""Prefetch, on the login node: fill the Hugging Face cache with each Hub model and judge and each benchmark's data,
check each task name and primary metric, and fetch each judged benchmark's records, before the jobs that need them
run offline on compute nodes."""


localrules:
    prefetch_model,
    prefetch_judge,
    prefetch_benchmark,
    prefetch_judged_benchmark,
    check_metric,


INCLUDE_PATH = as_json(config["evaluation"]["include_path"])  # local lm-eval task directories
TASKS = {name: spec["task"] for name, spec in config["benchmarks"].items()}


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


rule prefetch_judge:
    output:
        f"{PREFETCH}/judges/{{judge}}.json",
    log:
        f"{LOGS}/prefetch_judge/{{judge}}.log",
    params:
        models=lambda wildcards: as_json({wildcards.judge: config["judges"][wildcards.judge]}),
    priority: 100
    conda:
        "../../envs/judge.yaml"
    shell:
        "python scripts/prefetch.py --models {params.models:q} --output {output:q} > {log:q} 2>&1"


rule prefetch_benchmark:
    output:
        f"{PREFETCH}/benchmarks/{{benchmark}}.json",
    log:
        f"{LOGS}/prefetch_benchmark/{{benchmark}}.log",
    params:
        benchmarks=lambda wildcards: as_json({wildcards.benchmark: {"task": TASKS[wildcards.benchmark]}}),
        include_path=INCLUDE_PATH,
    priority: 100
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "python scripts/prefetch.py --benchmarks {params.benchmarks:q} --include-path {params.include_path:q}"
        " --output {output:q} > {log:q} 2>&1"


rule check_metric:
    input:
        PREFETCHED_BENCHMARK,
    output:
        f"{PREFETCH}/metrics/{{benchmark}}.json",
    log:
        f"{LOGS}/check_metric/{{benchmark}}.log",
    params:
        task=lambda wildcards: TASKS[wildcards.benchmark],
        metric=lambda wildcards: config["benchmarks"][wildcards.benchmark]["metric"],
        include_path=INCLUDE_PATH,
        offline=OFFLINE,
    priority: 100
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "{params.offline} python scripts/check_metric.py --benchmark {wildcards.benchmark} --task {params.task:q}"
        " --metric {params.metric:q} --include-path {params.include_path:q} --output {output:q} > {log:q} 2>&1"


# A judged benchmark's instructions and reference outputs, downloaded (and verified) or read, normalized to Parquet.
rule prefetch_judged_benchmark:
    input:
        lambda wildcards: config["judged_benchmarks"][wildcards.judged]["data"].get("path", []),
    output:
        f"{PREFETCH}/judged/{{judged}}.parquet",
    log:
        f"{LOGS}/prefetch_judged_benchmark/{{judged}}.log",
    params:
        spec=lambda wildcards: as_json(config["judged_benchmarks"][wildcards.judged]["data"]),
    priority: 100
    conda:
        "../../envs/judge.yaml"
    shell:
        "python scripts/prefetch_judged_benchmark.py --name {wildcards.judged} --spec {params.spec:q}"
        " --output {output:q} > {log:q} 2>&1"
