"""What the sweep cost: Snakemake's benchmark file of every training, evaluation, generation and judging job, as one
tidy table."""

import pandas as pd

JOB_KEYS = ["stage", "model", "dataset", "completion_weight", "plw", "seed", "benchmark"]
COST_COLUMNS = [*JOB_KEYS, "wall_s", "cpu_s", "max_rss_mb", "gpus", "gpu_hours"]


def job_cost(benchmark_tsv: str, gpus: int, **job) -> dict:
    """One job's row: wall and CPU seconds and peak resident memory (Snakemake's `benchmark:` measures the job's
    processes), and GPU-hours from the GPUs the job recorded that it used."""
    measured = pd.read_csv(benchmark_tsv, sep="\t").iloc[0]
    return {**dict.fromkeys(JOB_KEYS), **job, "wall_s": float(measured["s"]), "cpu_s": float(measured["cpu_time"]),
            "max_rss_mb": float(measured["max_rss"]), "gpus": int(gpus),
            "gpu_hours": int(gpus) * float(measured["s"]) / 3600}


def cost_markdown(costs: pd.DataFrame) -> str:
    """Totals per stage and per fine-tuned cell (its training and its evaluations), then the whole sweep."""
    totals = ["wall_s", "cpu_s", "gpu_hours"]
    sums = {name: (name, "sum") for name in totals}
    per_stage = costs.groupby("stage", sort=False).agg(jobs=("wall_s", "size"), **sums,
                                                       max_rss_mb=("max_rss_mb", "max"))
    cells = costs[costs["plw"].notna()]
    per_cell = cells.groupby(["model", "dataset", "completion_weight", "plw", "seed"], as_index=False).agg(
        **sums, max_rss_mb=("max_rss_mb", "max"))
    lines = ["# Cost of the sweep\n", "Measured by Snakemake's `benchmark:` of each job (its processes' wall and CPU "
             "time, peak resident memory); GPU-hours are the GPUs a job used times its wall time. Per job: "
             "`cost.parquet`.\n", "## Per stage\n",
             "| stage | jobs | wall (h) | CPU (h) | GPU-hours | peak memory (GB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {row.stage} | {row.jobs} | {row.wall_s / 3600:.3f} | {row.cpu_s / 3600:.3f} | {row.gpu_hours:.3f} | "
              f"{row.max_rss_mb / 1024:.2f} |" for row in per_stage.reset_index().itertuples()]
    lines.append(f"| all | {len(costs)} | {costs['wall_s'].sum() / 3600:.3f} | {costs['cpu_s'].sum() / 3600:.3f} | "
                 f"{costs['gpu_hours'].sum():.3f} | {costs['max_rss_mb'].max() / 1024:.2f} |")
    lines += ["\n## Per fine-tuned cell (its training, evaluations, generations and judgings)\n",
              "| model | dataset | completion weight | plw | seed | wall (h) | CPU (h) | GPU-hours "
              "| peak memory (GB) |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {row.model} | {row.dataset} | {row.completion_weight:g} | {row.plw:g} | {row.seed} | "
              f"{row.wall_s / 3600:.3f} | "
              f"{row.cpu_s / 3600:.3f} | {row.gpu_hours:.3f} | {row.max_rss_mb / 1024:.2f} |"
              for row in per_cell.itertuples()]
    return "\n".join(lines) + "\n"
