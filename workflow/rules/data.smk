"""Datasets: download and verify, normalize, derive (Short), the demo base model, and Table 1.

All are light: they run on the login node (localrules), which also has the internet for downloads.
"""


localrules:
    download_dataset,
    prepare_dataset,
    derive_short,
    build_base_model,
    dataset_stats,


# The file each dataset is normalized from: its verified download or its local path (none for Hub ids).
DATASET_FILES = {name: f"{RESULTS}/downloads/{name}.json" if "url" in spec else spec.get("path", [])
                 for name, spec in config["datasets"].items()}


rule download_dataset:
    output:
        f"{RESULTS}/downloads/{{dataset}}.json",
    log:
        f"{LOGS}/download_dataset/{{dataset}}.log",
    params:
        url=lambda wildcards: config["datasets"][wildcards.dataset]["url"],
        git_blob=lambda wildcards: config["datasets"][wildcards.dataset]["git_blob"],
    conda:
        "../../envs/data.yaml"
    shell:
        "python scripts/download_dataset.py --url {params.url:q} --git-blob {params.git_blob:q}"
        " --output {output:q} > {log:q} 2>&1"


rule prepare_dataset:
    input:
        lambda wildcards: DATASET_FILES[wildcards.dataset],
    output:
        f"{RESULTS}/data/{{dataset}}.parquet",
    log:
        f"{LOGS}/prepare_dataset/{{dataset}}.log",
    params:
        spec=lambda wildcards: as_json(config["datasets"][wildcards.dataset]),
        file=lambda wildcards, input: f"--file {shlex.quote(input[0])}" if input else "",
        bad_records=config["bad_records"],
    conda:
        "../../envs/data.yaml"
    shell:
        "python scripts/prepare_dataset.py --name {wildcards.dataset} --spec {params.spec:q} {params.file}"
        " --bad-records {params.bad_records:q} --output {output:q} > {log:q} 2>&1"


rule derive_short:
    input:
        data=lambda wildcards: normalized_dataset(config["datasets"][wildcards.dataset]["from"]),
        tokenizer=base_model_input,
    output:
        f"{RESULTS}/data/{{model}}/{{dataset}}.parquet",
    log:
        f"{LOGS}/derive_short/{{model}}/{{dataset}}.log",
    params:
        tokenizer=base_model_path,
        model_spec=lambda wildcards: as_json(config["models"][wildcards.model]),
    conda:
        "../../envs/data.yaml"
    shell:
        "python scripts/derive_short.py --input {input.data:q} --tokenizer {params.tokenizer:q}"
        " --model-spec {params.model_spec:q} --output {output:q} > {log:q} 2>&1"


rule build_base_model:
    input:
        [normalized_dataset(dataset) for dataset in DATASETS if not is_derived(dataset)],
    output:
        directory(f"{RESULTS}/base_models/{{model}}"),
    log:
        f"{LOGS}/build_base_model/{{model}}.log",
    params:
        settings=as_json(config["tiny_llama"]),
    conda:
        "../../envs/data.yaml"
    shell:
        "python scripts/build_base_model.py --corpus {input:q} --settings {params.settings:q}"
        " --output {output:q} > {log:q} 2>&1"


rule dataset_stats:
    input:
        data=sorted({training_data(model, dataset) for model in MODELS for dataset in DATASETS}),
        models=[path for model in MODELS for path in base_model_files(model)],
    output:
        parquet=f"{RESULTS}/tables/dataset_stats.parquet",
        markdown=report(DATASET_STATS, caption="../report/dataset_stats.rst", category="Tables"),
    log:
        f"{LOGS}/dataset_stats/dataset_stats.log",
    params:
        cells=as_json([dict(model=model, dataset=dataset, path=training_data(model, dataset),
                            tokenizer=base_model(model), **config["models"][model])
                       for model in MODELS for dataset in DATASETS]),
    conda:
        "../../envs/data.yaml"
    shell:
        "python scripts/dataset_stats.py --items {params.cells:q} --parquet {output.parquet:q}"
        " --markdown {output.markdown:q} > {log:q} 2>&1"
