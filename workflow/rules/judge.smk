"""Judged long generation: per (cell, judged benchmark) a generate job (the benchmark's instructions through the
Alpaca template, greedy) and a judge job (a local judge's verdicts against the reference outputs, and the win rate
as the cell's evaluation result, which the analysis reads like any benchmark's score). A new judge reruns the
judge jobs only."""

# Each judge as the judge jobs load it (path) and what must exist first (inputs): a model of the config (its base
# model, with that model's revision and trust_remote_code, and its files or prefetch marker), or a local directory
# or a Hub id (prefetched by prefetch_judge).
JUDGE_MODELS = {name: {**config["models"][spec["model"]], "path": base_model(spec["model"]),
                       "inputs": base_model_files(spec["model"]) or [f"{PREFETCH}/models/{spec['model']}.json"]}
                if "model" in spec else
                {**spec, "path": os.path.expanduser(spec["source"]),
                 "inputs": [spec["source"]] if is_local_path(spec["source"]) else [f"{PREFETCH}/judges/{name}.json"]}
                for name, spec in config["judges"].items()}
JUDGE_OPTIONS = {name: " ".join([f"--revision {shlex.quote(spec['revision'])}" if "revision" in spec else "",
                                 "--trust-remote-code" if spec["trust_remote_code"] else ""])
                 for name, spec in JUDGE_MODELS.items()}
JUDGE_OF = {name: spec["judge"] for name, spec in config["judged_benchmarks"].items()}


rule generate:
    input:
        model=f"{RESULTS}/models/{CELL}/model",
        data=f"{PREFETCH}/judged/{{judged}}.parquet",
    output:
        f"{RESULTS}/generations/{CELL}/{{judged}}.parquet",
    log:
        f"{LOGS}/generate/{CELL}/{{judged}}.log",
    benchmark:
        f"{COSTS}/generate/{CELL}/{{judged}}.tsv"
    params:
        cell=cell_json,
        max_new_tokens=lambda wildcards: config["judged_benchmarks"][wildcards.judged]["max_new_tokens"],
        offline=OFFLINE,
    conda:
        "../../envs/judge.yaml"
    shell:
        "{params.offline} python scripts/generate.py --cell {params.cell:q} --benchmark {wildcards.judged}"
        " --model {input.model:q} --data {input.data:q} --max-new-tokens {params.max_new_tokens}"
        " --output {output:q} > {log:q} 2>&1"


rule judge:
    input:
        generations=f"{RESULTS}/generations/{CELL}/{{judged}}.parquet",
        judge=lambda wildcards: JUDGE_MODELS[JUDGE_OF[wildcards.judged]]["inputs"],
    output:
        verdicts=f"{RESULTS}/judgments/{CELL}/{{judged}}.parquet",
        scores=f"{RESULTS}/eval/{CELL}/{{judged}}.parquet",
    log:
        f"{LOGS}/judge/{CELL}/{{judged}}.log",
    benchmark:
        f"{COSTS}/judge/{CELL}/{{judged}}.tsv"
    params:
        cell=cell_json,
        judge_name=lambda wildcards: JUDGE_OF[wildcards.judged],
        judge=lambda wildcards: JUDGE_MODELS[JUDGE_OF[wildcards.judged]]["path"],
        format=lambda wildcards: config["judges"][JUDGE_OF[wildcards.judged]]["format"],
        options=lambda wildcards: JUDGE_OPTIONS[JUDGE_OF[wildcards.judged]],
        offline=OFFLINE,
    conda:
        "../../envs/judge.yaml"
    shell:
        "{params.offline} python scripts/judge.py --cell {params.cell:q} --benchmark {wildcards.judged}"
        " --generations {input.generations:q} --judge {params.judge:q} --judge-name {params.judge_name:q}"
        " --format {params.format} {params.options} --verdicts {output.verdicts:q} --output {output.scores:q}"
        " > {log:q} 2>&1"
