"""A reduced demo through `--executor slurm` on a real single-node Slurm, compared with a local run.

The test installs and starts Slurm (Debian's slurm-wlm and munge, no slurmdbd) with tests/slurm/local_slurm.sh,
runs the workflow with the project's Slurm profile, checks that the GPU-rule jobs went through sbatch (Slurm
job ids in Snakemake's log and in Slurm's job-completion log), that the results have the same files as a local
run of the same configuration, and stops the daemons by their PIDs. It needs root (apt-get, daemons).
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from workflow_runner import REPO, copy_workflow, run_snakemake

pytestmark = pytest.mark.slow

SLURM_SCRIPT = REPO / "tests" / "slurm" / "local_slurm.sh"


def reduced_demo_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"] = {"demo": config["datasets"]["demo"]}
    config["plw"] = [0, 1]
    config["benchmarks"] = {"capitals": {**config["benchmarks"]["capitals"], "limit": 10}}
    config["training"] = {**config["training"], "max_steps": 4, "save_steps": 2}
    return config


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("starting a local Slurm needs root and apt-get")
    prefix = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "PREFIX": str(prefix)}
    started = subprocess.run(["bash", str(SLURM_SCRIPT), "start"], env=env, capture_output=True, text=True,
                             timeout=600)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"SLURM_CONF": str(prefix / "etc" / "slurm.conf"), "prefix": prefix}
    finally:
        subprocess.run(["bash", str(SLURM_SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120)


def result_files(workdir: Path) -> set[str]:
    """Every result file, without logs (their names differ by executor) and checkpoints (deleted at the end)."""
    results = workdir / "results"
    return {str(path.relative_to(results)) for path in results.rglob("*")
            if path.is_file() and path.parts[len(results.parts)] not in ("logs", "checkpoints")}


def test_reduced_demo_runs_through_sbatch_like_a_local_run(tmp_path, slurm):
    config = reduced_demo_config()
    local = copy_workflow(tmp_path / "local")
    on_slurm = copy_workflow(tmp_path / "slurm")
    for workdir in (local, on_slurm):
        (workdir / "config" / "reduced.yaml").write_text(yaml.safe_dump(config))

    run_snakemake(local, "--cores", "2", "--configfile", "config/reduced.yaml")
    # The cluster has no GPUs: the test asks for none, and polls Slurm often so the run is quick.
    result = run_snakemake(
        on_slurm, "--profile", "profiles/slurm", "--configfile", "config/reduced.yaml", "--jobs", "2",
        "--set-resources", "train:gpu=0", "evaluate:gpu=0", "evaluate_base:gpu=0",
        "--default-resources", "slurm_partition=debug", "mem_mb=2000", "runtime=20",
        "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2",
        env={"SLURM_CONF": slurm["SLURM_CONF"]}, timeout=1500)
    log = result.stdout + result.stderr

    job_ids = set(re.findall(r"has been submitted with SLURM jobid (\d+)", log))
    slurm_jobs = (slurm["prefix"] / "log" / "jobcomp.txt").read_text()
    trainings = len(config["plw"])
    evaluations = trainings * len(config["benchmarks"]) + len(config["benchmarks"])
    assert len(job_ids) >= trainings + evaluations, log[-5000:]
    for job_id in job_ids:
        assert re.search(rf"JobId={job_id} .*JobState=COMPLETED", slurm_jobs), (job_id, slurm_jobs[-3000:])
    assert result_files(on_slurm) == result_files(local)
