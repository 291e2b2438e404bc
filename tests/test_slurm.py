"""The README's Slurm commands, run as written on real single-node Slurms (tests/slurm/local_slurm.sh).

- The GPU command (`snakemake --profile slurm`, the workflow profile profiles/default) is planned for the paper's
  grid (the requests each job gets, and how PLW_GPUS and PLW_MODEL_B scale them), and runs a training and the
  base model's evaluation of the demo on a second Slurm whose node declares 8 GPUs, 64 CPUs and 1 TB (nothing
  runs on a GPU: the jobs find no CUDA). Slurm checks and allocates the requests: --gpus, --cpus-per-gpu, --mem,
  --time.
- Two Slurms side by side: the second one starts on other ports under its own PREFIX, stops, and the first one
  still runs jobs, whose inner srun finds their own Slurm without SLURM_CONF (the jobstep plugin deletes it).
- The CPU variant (`--workflow-profile profiles/cpu`) runs the reduced demo on a node of this machine's real size
  (its CPUs, its memory) through sbatch, and loses its head (kill -9 of Snakemake alone, as a dropped login
  session): its trainings go on as Slurm jobs; after `snakemake --unlock`, the same command waits for them, every
  cell trains once, and the results have the same files as a local run, the training logs the same values.

The tests add to the README's commands only a --configfile (the reduced demo), targets, and status polling every
2 s (the plugin's defaults wait 40 s before the first check). They need root (apt-get, daemons) and stop the
daemons by their PIDs.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from plw.grid import CELL, format_plw
from plw.grid import cells as grid_cells
from workflow_runner import REPO, copy_workflow, job_counts, run_snakemake

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
    # the trainings' and evaluations' paths are what these tests follow; the judged jobs, submitted as evaluations
    # are, have their own tests (test_faults.py runs them, the GPU plan checks their requests)
    config["judges"], config["judged_benchmarks"] = {}, {}
    return config


def workflow_copy(destination: Path, config: dict | None = None) -> Path:
    """A copy of the workflow with the reduced demo's config (or `config`) and the repository's `slurm` profile
    link."""
    workdir = copy_workflow(destination)
    (workdir / "slurm").symlink_to("profiles/slurm")
    (workdir / "config" / "reduced.yaml").write_text(yaml.safe_dump(config or reduced_demo_config()))
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


def running_slurm(tmp_path_factory, **settings):
    """A fixture's local Slurm (`settings` as local_slurm.sh takes them), stopped once the tests that use it end;
    skipped where it cannot start."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("starting a local Slurm needs root and apt-get")
    prefix = tmp_path_factory.mktemp("slurm")
    try:
        yield start(prefix, **settings)
    finally:
        local_slurm("stop", prefix, timeout=120)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The first Slurm: one node of this machine's size."""
    yield from running_slurm(tmp_path_factory)


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


SUBMITTED = r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_"  # the slurm executor's log line


def submitted_jobs(log: str) -> dict[str, str]:
    """Slurm job id -> rule, from the slurm executor's log lines."""
    return dict(re.findall(rf"{SUBMITTED}(\w+)/", log))


def submitted_trainings(log: str) -> dict[str, str]:
    """Slurm job id -> the wildcards of its cell (tiny-llama_demo_0_42), for the train jobs in the log."""
    return dict(re.findall(rf"{SUBMITTED}train/([^/\s]+)/", log))


def finished_jobs(instance: dict) -> dict[str, dict]:
    """Job id -> its fields in Slurm's job completion log (JobState, SubmitTime, StartTime, EndTime, ...)."""
    lines = (instance["prefix"] / "log" / "jobcomp.txt").read_text().splitlines()
    return {fields["JobId"]: fields for fields in (dict(re.findall(r"(\w+)=(\S*)", line)) for line in lines)
            if "JobId" in fields}


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
    for name in ("PLW_GPUS", "PLW_MODEL_B", "PLW_JUDGE_GPUS"):
        monkeypatch.delenv(name, raising=False)

    def plan(command: str, *extra: str, **env) -> dict:
        result = run_snakemake(workdir, "-n", *args(command), *extra, env=env, timeout=300)
        return planned_resources(result.stdout + result.stderr)

    paper = plan(GPU_COMMAND, "--configfile", "config/paper.yaml")
    assert requests(paper, "train") == GPU_TRAIN
    assert requests(paper, "evaluate") == requests(paper, "evaluate_base") == GPU_EVALUATE
    # the later design's judged benchmarks: answers as an evaluation, Mixtral's judging on two GPUs (or as set)
    later = plan(GPU_COMMAND, "--configfile", "config/paper_v4.yaml")
    assert requests(later, "generate") == GPU_EVALUATE and requests(later, "judge")["gpu"] == 2
    one_gpu = plan(GPU_COMMAND, "--configfile", "config/paper_v4.yaml", PLW_JUDGE_GPUS="1")
    assert requests(one_gpu, "judge")["gpu"] == 1

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


def test_gpu_command_on_a_second_slurm_beside_the_first(tmp_path, tmp_path_factory, slurm):
    workdir = workflow_copy(tmp_path / "gpu")
    second = tmp_path_factory.mktemp("slurm2")  # short: slurmd's socket paths must stay under 108 characters
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


def snakemake_in_background(workdir: Path, *arguments: str, env: dict, log: Path) -> subprocess.Popen:
    """run_snakemake's command, started in a session of its own (a login session's head), its output in `log`."""
    full_env = {**os.environ, **env}
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env['PATH']}"
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "snakemake", *arguments], cwd=workdir, env=full_env,
                                start_new_session=True, stdout=out, stderr=subprocess.STDOUT)


def queued_jobs(instance: dict, workdir: Path) -> dict[str, tuple[str, str]]:
    """Job id -> (state, comment) of this user's jobs that Slurm queues or runs in `workdir`."""
    listing = slurm_run(instance, "squeue", "--me", "--noheader", "--format", "%i|%T|%Z|%k").stdout
    return {job_id: (state, comment) for job_id, state, directory, comment in
            (line.split("|", 3) for line in listing.splitlines()) if Path(directory).resolve() == workdir.resolve()}


def queued_trainings(instance: dict, workdir: Path) -> set[str]:
    """Ids of the train jobs (by the slurm executor's job comment) that Slurm queues or runs in `workdir`."""
    return {job_id for job_id, (_, comment) in queued_jobs(instance, workdir).items()
            if comment.startswith("rule_train_")}


def test_after_a_lost_head_every_cell_trains_once_and_as_if_never_interrupted(tmp_path, slurm):
    """The CPU command, killed (kill -9, the head alone: a dropped login session) while a training runs on Slurm;
    its trainings go on as Slurm jobs. After `snakemake --unlock`, the same command first waits for them, then
    reruns their cells' jobs (incomplete to Snakemake), which hand back the finished results instead of training."""
    config = reduced_demo_config()
    # 10-30 s a training job here (a training takes the node's 2 CPUs: the other one waits). The kill comes when the
    # first one has taken its cell, before it imports PyTorch: the lost head's trainings still run or wait when
    # the rerun looks for them, a few seconds later
    config["training"] = {**config["training"], "max_steps": 40, "save_steps": 20}
    workdir = workflow_copy(tmp_path / "slurm", config)
    command = [*args(CPU_COMMAND), "--configfile", "config/reduced.yaml", *FAST_POLLING]
    env = {**slurm["env"], "PLW_MODEL_B": ""}
    # the train jobs' wildcards (as in their Slurm logs' folder: tiny-llama_demo_0_42) -> the cell
    grid = {"models": config["models"], "datasets": config["datasets"], "seeds": config["seeds"],
            "plws": [format_plw(plw) for plw in config["plw"]]}
    cells = {"_".join(map(str, cell.values())): CELL.format(**cell) for cell in grid_cells(grid)}

    lost_log = tmp_path / "lost_head.log"
    head = snakemake_in_background(workdir, *command, env=env, log=lost_log)
    try:
        deadline = time.monotonic() + 600
        # a training has taken its cell, and every training is submitted
        while not (list((workdir / "results" / "checkpoints").rglob("fingerprint.json"))
                   and len(queued_trainings(slurm, workdir)) == len(cells)):
            assert head.poll() is None and time.monotonic() < deadline, lost_log.read_text()[-5000:]
            time.sleep(0.5)
        head.kill()  # SIGKILL to the head alone: its Slurm jobs go on
        head.wait()
        orphans = submitted_trainings(lost_log.read_text())
        assert sorted(orphans.values()) == sorted(cells), lost_log.read_text()[-5000:]
        left_running = queued_trainings(slurm, workdir)
        assert left_running and left_running <= set(orphans), (left_running, orphans)

        run_snakemake(workdir, "--unlock", *args(CPU_COMMAND), "--configfile", "config/reduced.yaml", env=env)
        result = run_snakemake(workdir, *command, env=env, timeout=1500)
    finally:  # on a failure, nothing of this test is left to the next tests' Slurm jobs
        if head.poll() is None:
            head.kill()
            head.wait()
        if left_over := queued_jobs(slurm, workdir):
            slurm_run(slurm, "scancel", *left_over)
    rerun = result.stdout + result.stderr
    (tmp_path / "rerun.log").write_text(rerun)

    # (1) before submitting anything, the rerun waited for the lost head's trainings ...
    waited = re.search(rf"trainings of an earlier Snakemake in {re.escape(str(workdir))}: (.*)\. Waiting for them",
                       rerun)
    assert waited, rerun[-5000:]
    waited_for = set(re.findall(r"(\d+) \((?:running|pending)\)", waited[1]))
    assert waited_for and waited_for <= set(orphans), (waited[1], orphans)
    # ... which trained their cells and ended before the rerun submitted its own train jobs, one a cell (their
    # outputs are incomplete to Snakemake), and each of these handed the finished result back
    slurm_jobs = finished_jobs(slurm)
    retrained = submitted_trainings(rerun)
    assert sorted(retrained.values()) == sorted(cells), rerun[-5000:]
    assert all(slurm_jobs[job_id]["JobState"] == "COMPLETED" for job_id in [*orphans, *retrained]), slurm_jobs
    assert max(slurm_jobs[job_id]["EndTime"] for job_id in orphans) \
        <= min(slurm_jobs[job_id]["SubmitTime"] for job_id in retrained)
    for cell in cells.values():
        cell_log = (workdir / "results" / "logs" / "train" / f"{cell}.log").read_text(errors="replace")
        assert "handed back" in cell_log and "starting from the base model" not in cell_log, (cell, cell_log[-3000:])
    # every Slurm job of this workflow directory was submitted by one of the two heads: no other training ran
    in_workdir = {job_id for job_id, fields in slurm_jobs.items() if fields.get("WorkDir") == str(workdir)}
    assert in_workdir == set(submitted_jobs(lost_log.read_text())) | set(submitted_jobs(rerun))

    # (2) the run made every result that a local run of the same config makes, and every cell's training log is
    # that uninterrupted run's
    reference = workflow_copy(tmp_path / "local", config)
    run_snakemake(reference, "--cores", "2", "--configfile", "config/reduced.yaml")
    assert result_files(workdir) == result_files(reference)
    assert all(fields["JobState"] == "COMPLETED" for job_id, fields in slurm_jobs.items() if job_id in
               set(submitted_jobs(rerun)))
    logs = [f"results/models/{cell}/train_log.parquet" for cell in cells.values()]
    provenance = ["code_commit", "code_modified", "gpus"]
    for path in logs:
        pd.testing.assert_frame_equal(pd.read_parquet(workdir / path).drop(columns=provenance),
                                      pd.read_parquet(reference / path).drop(columns=provenance), rtol=1e-5)

    # (3) nothing is left to do
    plan = run_snakemake(workdir, "-n", *args(CPU_COMMAND), "--configfile", "config/reduced.yaml", env=env)
    assert job_counts(plan.stdout + plan.stderr) == {}, plan.stdout[-3000:]
