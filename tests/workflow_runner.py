"""Run the real Snakemake CLI on a copy of the workflow (used by the end-to-end, fault and Slurm tests)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = ("Snakefile", "workflow", "scripts", "resources", "config", "profiles", "envs")


def copy_workflow(destination: Path) -> Path:
    """A private copy of the workflow, so a real Snakemake run there writes its own results/."""
    destination.mkdir(parents=True)
    for part in WORKFLOW_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, destination / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, destination / part)
    return destination


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = 900, env: dict | None = None):
    """Run the real Snakemake CLI (the venv's) in `workdir`; return the CompletedProcess with text output."""
    command = [sys.executable, "-m", "snakemake", *args]
    full_env = {**os.environ, **(env or {})}
    # the workflow's shell commands call `python`: make it this interpreter
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env.get('PATH', '')}"
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def job_counts(plan: str) -> dict[str, int]:
    """Jobs per rule from the first "Job stats:" table of Snakemake's output (empty: nothing to be done)."""
    if "Job stats:" not in plan:
        return {}
    table = plan.split("Job stats:")[1].split("\n\n")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
            if rule != "total"}
