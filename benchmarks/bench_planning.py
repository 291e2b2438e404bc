"""Planning speed: wall time of `snakemake -n`, on the paper's grid (60 trainings, 480 evaluations) and at scale
(600 cells × 8 benchmarks: the paper's grid with 10 seeds, 600 trainings and 4,800 evaluations).

Baselines, measured in the same run: `snakemake -n` of a one-rule workflow (Snakemake's own start-up), and of a
two-rule workflow with the same 5,400 training and evaluation jobs at scale (the engine's own cost of that many
jobs). Prints the median of each and the ratios.

    python benchmarks/bench_planning.py [--repeats 3]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-n", "--quiet"]
SEEDS_AT_SCALE = 10

TWO_RULES = """
MODELS, DATASETS, PLWS, SEEDS, BENCHMARKS = {grid}
CELL = "{{model}}/{{dataset}}/plw-{{plw}}/seed-{{seed}}"
TARGETS = expand("eval/" + CELL + "/{{benchmark}}.parquet", model=MODELS, dataset=DATASETS, plw=PLWS, seed=SEEDS,
                 benchmark=BENCHMARKS)

rule all:
    input: TARGETS

rule train:
    output: directory("models/" + CELL)
    shell: "mkdir -p {{output}}"

rule evaluate:
    input: "models/" + CELL
    output: "eval/" + CELL + "/{{benchmark}}.parquet"
    shell: "touch {{output}}"
"""


def time_command(command: list[str], cwd: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    at_scale = {**paper, "seeds": list(range(SEEDS_AT_SCALE))}
    grid = ([*paper["models"]], [*paper["datasets"]], [str(plw) for plw in paper["plw"]], at_scale["seeds"],
            [*paper["benchmarks"]])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "one").mkdir()
        (tmp / "one" / "Snakefile").write_text('rule all:\n    output: "x"\n    shell: "touch {output}"\n')
        (tmp / "two").mkdir()
        (tmp / "two" / "Snakefile").write_text(TWO_RULES.format(grid=grid))
        (tmp / "scale.yaml").write_text(yaml.safe_dump(at_scale))
        one_rule = time_command(SNAKEMAKE, tmp / "one", args.repeats)
        two_rules = time_command(SNAKEMAKE, tmp / "two", args.repeats)
        paper_plan = time_command([*SNAKEMAKE, "--configfile", "config/paper.yaml"], REPO, args.repeats)
        scale_plan = time_command([*SNAKEMAKE, "--configfile", str(tmp / "scale.yaml")], REPO, args.repeats)
    print(f"snakemake -n, one-rule workflow (baseline):            {one_rule:.2f} s")
    print(f"snakemake -n, paper grid:                               {paper_plan:.2f} s "
          f"({paper_plan / one_rule:.2f}x the one-rule baseline)")
    print(f"snakemake -n, two rules, 5,400 jobs (baseline):         {two_rules:.2f} s")
    print(f"snakemake -n, 600 cells x 8 benchmarks:                 {scale_plan:.2f} s "
          f"({scale_plan / two_rules:.2f}x the two-rule baseline)")


if __name__ == "__main__":
    main()
