"""Planning speed: wall time of `snakemake -n` on the paper's grid (60 trainings, 480 evaluations).

Baseline, measured in the same run: `snakemake -n` of a one-rule workflow, i.e. Snakemake's own start-up and
planning cost. Prints the median of each and their ratio. Target: the paper plan in <= 5 s.

    python benchmarks/bench_planning.py [--repeats 3]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


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
    with tempfile.TemporaryDirectory() as tmp:
        baseline_dir = Path(tmp)
        (baseline_dir / "Snakefile").write_text('rule all:\n    output: "x"\n    shell: "touch {output}"\n')
        baseline = time_command([*SNAKEMAKE, "-n", "--quiet"], baseline_dir, args.repeats)
    paper = time_command([*SNAKEMAKE, "-n", "--quiet", "--configfile", "config/paper.yaml"], REPO, args.repeats)
    print(f"snakemake -n, one-rule workflow (baseline): {baseline:.2f} s")
    print(f"snakemake -n, paper grid:                    {paper:.2f} s (target <= 5 s)")
    print(f"ratio paper / baseline: {paper / baseline:.2f}x")


if __name__ == "__main__":
    main()
