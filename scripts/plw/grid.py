"""The experiment grid and where its results lie, for the workflow and for the analysis scripts alike.

A grid is a small dict: {"results", "models", "datasets", "completion_weights", "plws", "seeds", "benchmarks",
"judged_benchmarks", "evaluate_base_models"} (completion weights, PLWs and seeds as spelled in paths; completion
weights and judged benchmarks optional). The scripts enumerate it
themselves rather than take every cell on their command line, which a large grid would make longer than the kernel
allows (128 KiB for one argument).
"""

import itertools

import numpy as np

# {cw}: '' for the paper's completion weight 1 (the paths of a grid without that axis), else '_cw-<weight>'
CELL = "{model}/{dataset}/plw-{plw}{cw}/seed-{seed}"


def format_plw(plw: float) -> str:
    """0.0005 -> '0.0005' (never '5e-04'), 1.0 -> '1', 0 -> '0'; float(format_plw(x)) == x."""
    text = np.format_float_positional(float(plw), trim="-")
    assert float(text) == float(plw), (plw, text)
    return text


def completion_weight_suffix(weight) -> str:
    """A completion weight as its cells' paths spell it after the PLW: '' for 1, '_cw-0.5' for 0.5."""
    return "" if float(weight) == 1 else f"_cw-{format_plw(weight)}"


def cells(grid: dict):
    """Every (model, dataset, completion weight, plw, seed) of the grid, as wildcard dicts."""
    for model, dataset, weight, plw, seed in itertools.product(
            grid["models"], grid["datasets"], grid.get("completion_weights", [1]), grid["plws"], grid["seeds"]):
        yield dict(model=model, dataset=dataset, plw=plw, cw=completion_weight_suffix(weight), seed=seed)


def eval_result(grid: dict, benchmark: str, **cell) -> str:
    return f"{grid['results']}/eval/{CELL}/{benchmark}.parquet".format(**cell)


def mechanism_result(grid: dict, **cell) -> str:
    return f"{grid['results']}/mechanisms/{CELL}.parquet".format(**cell)


def memorization_result(grid: dict, **cell) -> str:
    return f"{grid['results']}/memorization/{CELL}.parquet".format(**cell)


def base_eval_result(grid: dict, model: str, benchmark: str) -> str:
    return f"{grid['results']}/eval/{model}/base/{benchmark}.parquet"


def typed_cell(cell: dict) -> dict:
    """A cell as the scripts take it (--cell): PLW and seed as numbers, not as spelled in paths, and its completion
    weight where it is not the paper's 1 (a cell of weight 1 reads as before that axis existed, so the parameters
    of its jobs, and thus a sweep's finished results, stay as they were)."""
    typed = {key: value for key, value in cell.items() if key != "cw"}
    typed.update(plw=float(cell["plw"]), seed=int(cell["seed"]))
    if cell.get("cw"):
        typed["completion_weight"] = float(cell["cw"].removeprefix("_cw-"))
    return typed


def cell_row(cell: dict) -> dict:
    """A cell as the tables key it: typed_cell with its completion weight always."""
    return {"completion_weight": 1.0, **typed_cell(cell)}


def expected_evaluations(grid: dict) -> list[dict]:
    """Every evaluation result of the grid with its cell ({path, model, dataset, plw, seed, benchmark}); base
    models have no dataset, plw or seed. A judged benchmark's win rate is a fine-tuned cell's evaluation result too
    (base models are not judged: they do not follow instructions)."""
    rows = [{**cell_row(cell), "benchmark": benchmark, "path": eval_result(grid, benchmark, **cell)}
            for cell in cells(grid) for benchmark in [*grid["benchmarks"], *grid.get("judged_benchmarks", [])]]
    if grid["evaluate_base_models"]:
        rows += [dict(model=model, dataset=None, plw=None, seed=None, completion_weight=None, benchmark=benchmark,
                      path=base_eval_result(grid, model, benchmark))
                 for model in grid["models"] for benchmark in grid["benchmarks"]]
    return rows


def costed_jobs(grid: dict) -> list[dict]:
    """Every training, evaluation, generation and judging job: its Snakemake benchmark file and the result that
    records its GPUs."""
    costs, results = f"{grid['results']}/benchmarks", grid["results"]
    jobs = []
    for cell in cells(grid):
        jobs.append({"stage": "train", **cell_row(cell), "benchmark_tsv": f"{costs}/train/{CELL}.tsv".format(**cell),
                     "result": f"{results}/models/{CELL}/train_log.parquet".format(**cell)})
        jobs += [{"stage": "evaluate", **cell_row(cell), "benchmark": benchmark,
                  "benchmark_tsv": f"{costs}/evaluate/{CELL}/{benchmark}.tsv".format(**cell),
                  "result": eval_result(grid, benchmark, **cell)} for benchmark in grid["benchmarks"]]
        for judged in grid.get("judged_benchmarks", []):
            jobs += [{"stage": "generate", **cell_row(cell), "benchmark": judged,
                      "benchmark_tsv": f"{costs}/generate/{CELL}/{judged}.tsv".format(**cell),
                      "result": f"{results}/generations/{CELL}/{judged}.parquet".format(**cell)},
                     {"stage": "judge", **cell_row(cell), "benchmark": judged,
                      "benchmark_tsv": f"{costs}/judge/{CELL}/{judged}.tsv".format(**cell),
                      "result": eval_result(grid, judged, **cell)}]
    if grid["evaluate_base_models"]:
        jobs += [{"stage": "evaluate_base", "model": model, "benchmark": benchmark,
                  "benchmark_tsv": f"{costs}/evaluate_base/{model}/{benchmark}.tsv",
                  "result": base_eval_result(grid, model, benchmark)}
                 for model in grid["models"] for benchmark in grid["benchmarks"]]
    return jobs
