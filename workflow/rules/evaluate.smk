"""Evaluation: one job per (cell, benchmark) with lm-evaluation-harness, plus the base models' reference rows."""

localrules:
    prefetch,


rule prefetch:
    output:
        PREFETCHED,
    log:
        f"{LOGS}/prefetch/prefetch.log",
    params:
        models=as_json({name: spec for name, spec in config["models"].items()
                        if "source" in spec and not is_local_path(spec["source"])}),
        datasets=as_json({name: spec for name, spec in config["datasets"].items() if "hub" in spec}),
        benchmarks=as_json(config["benchmarks"]),
        include_path=as_json(config["evaluation"]["include_path"]),
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "python scripts/prefetch.py --models {params.models:q} --datasets {params.datasets:q}"
        " --benchmarks {params.benchmarks:q} --include-path {params.include_path:q}"
        " --output {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        model=f"{RESULTS}/models/{CELL}/model",
        prefetched=ancient(PREFETCHED),
    output:
        scores=f"{RESULTS}/eval/{CELL}/{{benchmark}}.parquet",
        results=f"{RESULTS}/eval/{CELL}/{{benchmark}}.json",
    log:
        f"{LOGS}/evaluate/{CELL}/{{benchmark}}.log",
    params:
        cell=lambda wildcards: as_json(dict(model=wildcards.model, dataset=wildcards.dataset,
                                            plw=float(wildcards.plw), seed=int(wildcards.seed))),
        spec=benchmark_spec,
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
        prefetched=ancient(PREFETCHED),
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
        spec=benchmark_spec,
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
