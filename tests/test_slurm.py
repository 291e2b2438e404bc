"""The README's Slurm commands, run as written on real single-node Slurms (tests/slurm/local_slurm.sh).

- The CPU variant (`--workflow-profile profiles/cpu`) runs the reduced demo on a node of this machine's real size
  (its CPUs, its memory) through sbatch, and its results have the same files as a local run.
- The GPU command (`snakemake --profile slurm`, the workflow profile profiles/default) is planned for the paper's
  grid (the requests each job gets, and how PLW_GPUS and PLW_MODEL_B scale them), and runs a training and the
  base model's evaluation of the demo on a second Slurm whose node declares 8 GPUs, 64 CPUs and 1 TB (nothing
  runs on a GPU: the jobs find no CUDA). Slurm checks and allocates the requests: --gpus, --cpus-per-gpu, --mem,
  --time.
- Two Slurms side by side: the second one starts on other ports under its own PREFIX, stops, and the first one
  still runs jobs, whose inner srun finds their own Slurm without SLURM_CONF (the jobstep plugin deletes it).

The tests add to the README's commands only a --configfile (the reduced demo), targets, and status polling every
2 s (the plugin's defaults wait 40 s before the first check). They need root (apt-get, daemons) and stop the
daemons by their PIDs.
"""

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from workflow_runner import REPO, copy_workflow, run_snakemake

pytestmark = pytest.mark.slow

SLURM_SCRIPT = REPO / "tests" / "slurm" / "local_slurm.sh"
# The README's commands (README.md, "Running on a Slurm cluster").
GPU_COMMAND = "snakemake --profile slurm"
CPU_COMMAND = "snakemake --profile slurm --workflow-profile profiles/cpu"
FAST_POLLING = ("--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2")
# The GPU command's requests for the paper's 7B models, as profiles/default computes them.
GPU_TRAIN = {"nodes": 1, "gpu": 4, "cpus_per_gpu": 8, "mem_mb": 238592, "runtime": 1440}
GPU_EVALUATE = {"nodes": 1, "gpu": 1, "cpus_per_gpu": 8, "mem_mb": 60416, "runtime": 240}


def reduced_demo_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"] = {"demo": config["datasets"]["demo"]}
    config["plw"] = [0, 1]
    config["benchmarks"] = {"capitals": {**config["benchmarks"]["capitals"], "limit": 10}}
    config["training"] = {**config["training"], "max_steps": 4, "save_steps": 2}
    return config


def workflow_copy(destination: Path) -> Path:
    """A copy of the workflow with the reduced demo's config and the repository's `slurm` profile link."""
    workdir = copy_workflow(destination)
    (workdir / "slurm").symlink_to("profiles/slurm")
    (workdir / "config" / "reduced.yaml").write_text(yaml.safe_dump(reduced_demo_config()))
    return workdir


def args(command: str) -> list[str]:
    """A README command's arguments (run_snakemake runs `python -m snakemake`)."""
    words = command.split()
    assert words[0] == "snakemake"
    return words[1:]


def local_slurm(action: str, prefix: Path, timeout: float = 600, **settings) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFIX": str(prefix), **{key: str(value) for key, value in settings.items()}}
    return subprocess.run(["bash", str(SLURM_SCRIPT), action], env=env, capture_output=True, text=True,
                          check=False, timeout=timeout)


def slurm_env(prefix: Path) -> dict:
    """What `local_slurm.sh env` exports: the instance's SLURM_CONF, and its bin/ (its srun) first on the PATH."""
    return {"SLURM_CONF": str(prefix / "etc" / "slurm.conf"),
            "PATH": f"{prefix / 'bin'}{os.pathsep}{os.environ['PATH']}"}


def start(prefix: Path, **settings) -> dict:
    started = local_slurm("start", prefix, **settings)
    if started.returncode != 0:
        local_slurm("stop", prefix, timeout=120)
        raise AssertionError(started.stdout + started.stderr)
    return {"prefix": prefix, "env": slurm_env(prefix)}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The first Slurm: one node of this machine's size."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("starting a local Slurm needs root and apt-get")
    prefix = tmp_path_factory.mktemp("slurm")
    try:
        yield start(prefix)
    finally:
        local_slurm("stop", prefix, timeout=120)


def slurm_run(instance: dict, *command: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd or instance["prefix"], env={**os.environ, **instance["env"]},
                          capture_output=True, text=True, check=False, timeout=60)


def job_details(instance: dict, job_id: str) -> str:
    return slurm_run(instance, "scontrol", "show", "job", job_id).stdout


def daemons(prefix: Path) -> list[str]:
    """Command lines of the running processes that belong to the instance under `prefix`."""
    lines = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line for line in lines if f"{prefix}/" in line and not line.startswith("[")]


def sbatch_and_wait(instance: dict, name: str) -> str:
    """A batch job whose inner srun runs without SLURM_CONF, as in a Snakemake job; its output."""
    out = instance["prefix"] / "log" / f"{name}.out"
    submitted = slurm_run(instance, "sbatch", "--parsable", "--wait", "-o", str(out),
                          "--wrap", "env -u SLURM_CONF srun -n1 echo step-ran")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr + out.read_text()
    return out.read_text()


def submitted_jobs(log: str) -> dict[str, str]:
    """Slurm job id -> rule, from the slurm executor's log lines."""
    return dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", log))


def planned_resources(plan: str) -> dict[str, set[tuple]]:
    """Rule -> the distinct resource maps of its jobs, from a dry run's job listing."""
    planned: dict[str, set[tuple]] = {}
    for rule, resources in re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", plan, flags=re.MULTILINE):
        entries = dict(entry.split("=", 1) for entry in resources.split(", "))
        planned.setdefault(rule, set()).add(tuple(sorted(entries.items())))
    return planned


def requests(planned: dict, rule: str) -> dict:
    (resources,) = planned[rule]
    return {key: int(value) for key, value in resources if key in GPU_TRAIN}


def test_readme_documents_the_tested_commands():
    readme = (REPO / "README.md").read_text()
    for command in (f"{GPU_COMMAND} --configfile config/paper.yaml", f"PLW_GPUS=8 {GPU_COMMAND}", CPU_COMMAND):
        assert command in readme, command


def test_gpu_command_plans_model_sized_requests(tmp_path, monkeypatch):
    workdir = workflow_copy(tmp_path / "plan")
    for name in ("PLW_GPUS", "PLW_MODEL_B"):
        monkeypatch.delenv(name, raising=False)

    def plan(command: str, *extra: str, **env) -> dict:
        result = run_snakemake(workdir, "-n", *args(command), *extra, env=env, timeout=300)
        return planned_resources(result.stdout + result.stderr)

    paper = plan(GPU_COMMAND, "--configfile", "config/paper.yaml")
    assert requests(paper, "train") == GPU_TRAIN
    assert requests(paper, "evaluate") == requests(paper, "evaluate_base") == GPU_EVALUATE

    # One knob changes the GPUs and what follows from them, and leaves the evaluations as they were.
    eight = plan(GPU_COMMAND, "--configfile", "config/paper.yaml", PLW_GPUS="8")
    assert requests(eight, "train") == {**GPU_TRAIN, "gpu": 8, "mem_mb": 2 * GPU_TRAIN["mem_mb"] - 1024, "runtime": 720}
    assert requests(eight, "evaluate") == GPU_EVALUATE
    bigger = plan(GPU_COMMAND, "--configfile", "config/paper.yaml", PLW_MODEL_B="13")
    assert requests(bigger, "train")["mem_mb"] > 1.8 * GPU_TRAIN["mem_mb"]
    assert requests(bigger, "evaluate")["runtime"] > GPU_EVALUATE["runtime"]

    # The CPU variant asks for no GPU, and for what a small node has.
    cpu = plan(CPU_COMMAND, "--configfile", "config/reduced.yaml")
    for rule in ("train", "evaluate", "evaluate_base"):
        assert "gpu" not in requests(cpu, rule) and requests(cpu, rule)["mem_mb"] <= 4096, cpu[rule]


def test_start_fails_when_the_controller_does_not_come_up(tmp_path, slurm):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # bound, not listening: slurmctld cannot bind it, and a ping is refused
        port = taken.getsockname()[1]
        prefix = tmp_path / "broken"
        started = local_slurm("start", prefix, timeout=120, SLURMCTLD_PORT=port, START_TIMEOUT=20)
    assert started.returncode != 0
    assert "did not come up" in started.stderr and "Address already in use" in started.stderr, started.stderr
    assert daemons(prefix) == []


def test_gpu_command_on_a_second_slurm_beside_the_first(tmp_path, slurm):
    workdir = workflow_copy(tmp_path / "gpu")
    second = tmp_path / "second-slurm"
    gpu_slurm = start(second, GPUS=8, NCPU=64, MEM_MB=1_000_000)
    try:
        ports = [re.search(rf"^{name}=(\d+)$", (prefix / "etc" / "slurm.conf").read_text(), re.MULTILINE)[1]
                 for prefix in (slurm["prefix"], second) for name in ("SlurmctldPort", "SlurmdPort")]
        assert len(set(ports)) == 4, ports
        assert sbatch_and_wait(slurm, "first-while-both").strip() == "step-ran"

        # A training and the base model's evaluation (side by side), with the GPU command's requests.
        targets = ["results/models/tiny-llama/demo/plw-0/seed-42/model",
                   "results/eval/tiny-llama/base/capitals.parquet"]
        result = run_snakemake(workdir, *args(GPU_COMMAND), *targets, "--configfile", "config/reduced.yaml",
                               *FAST_POLLING, env={**gpu_slurm["env"], "PLW_GPUS": "", "PLW_MODEL_B": ""},
                               timeout=900)
        log = result.stdout + result.stderr
        jobs = submitted_jobs(log)
        assert sorted(jobs.values()) == ["evaluate_base", "train"], log[-5000:]
        for job_id, rule in jobs.items():
            details = job_details(gpu_slurm, job_id)
            expected = GPU_TRAIN if rule == "train" else GPU_EVALUATE
            assert "JobState=COMPLETED" in details, details
            assert f"TresPerJob=gres:gpu:{expected['gpu']}" in details, details
            assert f"cpu={expected['gpu'] * expected['cpus_per_gpu']}," in details, details
            assert f"mem={expected['mem_mb']}M" in details or f"mem={expected['mem_mb'] / 1024:g}G" in details, details
            hours, minutes = divmod(expected["runtime"], 60)
            assert f"TimeLimit={'1-00' if hours == 24 else f'{hours:02d}'}:{minutes:02d}:00" in details, details
        assert all((workdir / target).exists() for target in targets)
    finally:
        stopped = local_slurm("stop", second, timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert daemons(second) == []
    assert daemons(slurm["prefix"]), "stopping the second Slurm stopped the first one"
    assert sbatch_and_wait(slurm, "first-after-second-stopped").strip() == "step-ran"


def result_files(workdir: Path) -> set[str]:
    """Every result file, without logs (their names differ by executor) and checkpoints (deleted at the end)."""
    results = workdir / "results"
    return {str(path.relative_to(results)) for path in results.rglob("*")
            if path.is_file() and path.parts[len(results.parts)] not in ("logs", "checkpoints")}


def test_cpu_variant_runs_the_reduced_demo_through_sbatch_like_a_local_run(tmp_path, slurm):
    local = workflow_copy(tmp_path / "local")
    on_slurm = workflow_copy(tmp_path / "slurm")
    config = reduced_demo_config()

    run_snakemake(local, "--cores", "2", "--configfile", "config/reduced.yaml")
    result = run_snakemake(on_slurm, *args(CPU_COMMAND), "--configfile", "config/reduced.yaml", *FAST_POLLING,
                           env={**slurm["env"], "PLW_MODEL_B": ""}, timeout=1500)
    log = result.stdout + result.stderr

    job_ids = set(submitted_jobs(log))
    slurm_jobs = (slurm["prefix"] / "log" / "jobcomp.txt").read_text()
    trainings = len(config["plw"])
    evaluations = trainings * len(config["benchmarks"]) + len(config["benchmarks"])
    assert len(job_ids) >= trainings + evaluations, log[-5000:]
    for job_id in job_ids:
        assert re.search(rf"JobId={job_id} .*JobState=COMPLETED", slurm_jobs), (job_id, slurm_jobs[-3000:])
    assert result_files(on_slurm) == result_files(local)
