"""Training on several nodes through the Slurm executor plugin (docs/slurm.md, "Several nodes").

- The GPU command with PLW_NODES=2 plans each training as an MPI job of the plugin (nodes, one task per node, `mpi:
  srun`, GPUs per node) whose sbatch asks for 2 nodes x PLW_GPUS GPUs, and whose command tells train.py how to start
  one task per node; the evaluations stay as they were.
- On the local Slurm (tests/slurm/local_slurm.sh), the CPU command with PLW_NODES=2 runs a training as a job of two
  tasks, each a "node" of one process (a gloo rank) on this machine: one slurmd runs both tasks (its workflow profile
  is profiles/cpu with `nodes: 1`), and the c10d rendezvous is on this host. Its log is one process's (a local run of
  the same cell). Run again with --forcerun, the job hands the finished result back without starting a task.
- FSDP across the two "nodes": the same job with `fsdp: full_shard auto_wrap`, its command running train.py through
  tests/fsdp_train.py (Accelerate's FSDP gate lifted for CPU ranks; train.py starts its tasks and ranks with the
  command it was started with): both ranks hold half of every parameter, and the log is again one process's.

The tests on the local Slurm need root (apt-get, daemons), as tests/test_slurm.py, whose helpers they use.
"""

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from snakemake_executor_plugin_slurm.validation import validate_slurm_extra
from test_slurm import (
    CPU_COMMAND,
    FAST_POLLING,
    GPU_COMMAND,
    args,
    finished_jobs,
    job_details,
    planned_resources,
    reduced_demo_config,
    running_slurm,
    submitted_jobs,
    workflow_copy,
)

from workflow_runner import REPO, run_snakemake

pytestmark = pytest.mark.slow

CELL = "tiny-llama/demo/plw-0/seed-42"
MODEL = f"results/models/{CELL}/model"
TRAIN_LOG = f"results/models/{CELL}/train_log.parquet"
CELL_LOG = f"results/logs/train/{CELL}.log"
# rank 0 and rank 1 print where their parameters live (train.py, under FSDP)
SHARDS = re.compile(r"rank (\d): (\d+) of (\d+) parameter values, (.+); FSDP modules: (.+)")


def two_task_config(**training) -> dict:
    """The reduced demo (4 steps), 16 records a step: one process accumulates 2 micro-batches of 8, each of the
    two ranks takes one."""
    config = reduced_demo_config()
    config["training"] = {**config["training"], "per_device_batch_size": 8, "global_batch_size": 16, **training}
    return config


def test_two_nodes_plan_an_mpi_job_of_two_tasks_and_nodes_times_gpus(tmp_path, monkeypatch):
    for name in ("PLW_GPUS", "PLW_NODES", "PLW_MODEL_B"):
        monkeypatch.delenv(name, raising=False)
    workdir = workflow_copy(tmp_path / "plan")
    result = run_snakemake(workdir, "-n", *args(GPU_COMMAND), "--configfile", "config/paper.yaml",
                           env={"PLW_NODES": "2", "PLW_GPUS": "8"}, timeout=300)
    plan = result.stdout + result.stderr
    planned = planned_resources(plan)
    (train,) = planned["train"]
    train = {key: value for key, value in train if key not in ("tmpdir", "mem", "mem_mib")}  # Snakemake's own
    assert train == {"nodes": "2", "tasks": "2", "mpi": "srun", "gpus_per_node": "8",
                     "slurm_extra": "--gpus-per-node=8", "cpus_per_task": "64", "runtime": "360",
                     "mem_mb": "476160"}, train
    (evaluate,) = planned["evaluate"]
    assert dict(evaluate)["nodes"] == "1" and dict(evaluate)["gpu"] == "1"

    # the sbatch of the slurm executor plugin: 2 nodes, 2 tasks, 8 GPUs and 64 CPUs on each node, the memory per node
    resources = {key: int(value) if value.isdigit() else value for key, value in train.items()}
    job = SimpleNamespace(resources=SimpleNamespace(**resources, get=resources.get), threads=2)
    validate_slurm_extra(job)
    sbatch = get_submit_command(job, {"run_uuid": "x", "slurm_logfile": "log", "comment_str": "rule_train",
                                      "account": "", "partition": "", "workdir": str(workdir)}) + set_gres_string(job)
    options = sbatch.split()
    for option in ("--nodes=2", "--ntasks=2", "--cpus-per-task=64", "--gpus-per-node=8"):
        assert option in options, sbatch
    assert "--mem 476160" in sbatch and "--gpus=" not in sbatch and "--ntasks-per-gpu" not in sbatch, sbatch

    # each training's command: train.py, told how to start one task per node (srun in the job's allocation)
    commands = re.findall(r"^\s*(\S.*python scripts/train\.py .*)$", plan, flags=re.MULTILINE)
    assert len(commands) == 60, plan[-3000:]
    tasks = "srun --nodes=2 --ntasks=2 --cpus-per-task=64 --kill-on-bad-exit=1"
    assert all(f"PLW_NODE_TASKS='{tasks}' python scripts/train.py" in command and " --gpus 8 " in command
               for command in commands), commands[0]


@pytest.fixture(scope="module")
def slurm_of_four_cpus(tmp_path_factory):
    """A local Slurm whose node has 4 CPUs: two tasks of the train rule's 2 threads each."""
    yield from running_slurm(tmp_path_factory, NCPU=4)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The cell trained locally as one process (its data and base model built on the way): a workflow directory
    that each multi-node run copies, without the cell's training."""
    workdir = workflow_copy(tmp_path_factory.mktemp("one") / "workflow", two_task_config())
    run_snakemake(workdir, TRAIN_LOG, "--cores", "2", "--configfile", "config/reduced.yaml",
                  env={"PLW_NODES": "", "PLW_GPUS": "", "PLW_MODEL_B": ""})
    return workdir


def two_task_workflow(one_process: Path, destination: Path, config: dict) -> Path:
    """A copy of the one-process run, its cell's training deleted, with a workflow profile of two tasks on one node:
    profiles/cpu with PLW_NODES=2, but `nodes: 1`, since the local Slurm has one node."""
    workdir = destination / "workflow"
    shutil.copytree(one_process, workdir, symlinks=True)
    for path in (MODEL, f"results/checkpoints/{CELL}"):
        shutil.rmtree(workdir / path)
    (workdir / TRAIN_LOG).unlink()
    (workdir / "config" / "reduced.yaml").write_text(yaml.safe_dump(config))
    profile = (workdir / "profiles" / "cpu" / "config.yaml").read_text()
    assert profile.count("nodes: ?nodes\n") == 1
    (workdir / "profiles" / "two-tasks").mkdir()
    (workdir / "profiles" / "two-tasks" / "config.yaml").write_text(profile.replace("nodes: ?nodes\n", "nodes: 1\n"))
    return workdir


def run_on_slurm(instance: dict, workdir: Path, *extra: str) -> str:
    """The CPU command with PLW_NODES=2 and the two-task workflow profile, for the cell's model; its output."""
    command = args(CPU_COMMAND.replace("profiles/cpu", "profiles/two-tasks"))
    result = run_snakemake(workdir, *command, MODEL, "--configfile", "config/reduced.yaml", *FAST_POLLING, *extra,
                           env={**instance["env"], "PLW_NODES": "2", "PLW_MODEL_B": "", "OMP_NUM_THREADS": "1"},
                           timeout=600)
    return result.stdout + result.stderr


def the_training_job(instance: dict, log: str) -> str:
    """The one Slurm job of the run, a training, completed; its id."""
    jobs = submitted_jobs(log)
    assert list(jobs.values()) == ["train"], log[-5000:]
    (job_id,) = jobs
    assert finished_jobs(instance)[job_id]["JobState"] == "COMPLETED", finished_jobs(instance)[job_id]
    return job_id


def assert_one_process_log(workdir: Path, one_process: Path) -> None:
    """The same steps, tokens, loss and gradient norm as the one process's training of the cell."""
    two, one = (pd.read_parquet(directory / TRAIN_LOG) for directory in (workdir, one_process))
    assert two["step"].tolist() == one["step"].tolist() == [1, 2, 3, 4]
    assert two["tokens"].tolist() == one["tokens"].tolist()
    for key in ("loss", "grad_norm", "weight_sum"):
        assert two[key].to_numpy() == pytest.approx(one[key].to_numpy(), rel=1e-5), key
    assert two["gpus"].tolist() == [0] * 4


def test_two_nodes_train_through_the_rendezvous_like_one_process(tmp_path, slurm_of_four_cpus, one_process):
    instance = slurm_of_four_cpus
    workdir = two_task_workflow(one_process, tmp_path, two_task_config())
    log = run_on_slurm(instance, workdir)
    job_id = the_training_job(instance, log)
    details = job_details(instance, job_id)
    assert "NumNodes=1 " in details and "NumTasks=2 " in details, details

    cell_log = (workdir / CELL_LOG).read_text(errors="replace")
    (tmp_path / "trained.log").write_text(cell_log)  # the rerun below writes over it
    tasks = "srun --nodes=1 --ntasks=2 --cpus-per-task=2 --kill-on-bad-exit=1"
    assert re.search(rf"one task per node: {tasks}; rendezvous at [\w.-]+:\d+\n", cell_log), cell_log[-3000:]
    assert "2 processes, data parallel" in cell_log, cell_log[-3000:]
    assert cell_log.count("starting from the base model") == 2, cell_log[-3000:]  # once a rank
    assert_one_process_log(workdir, one_process)

    # Again (--forcerun): the job's first process takes the cell and hands the finished run back; no task starts,
    # so none waits for a rendezvous
    again = run_on_slurm(instance, workdir, "--forcerun", "train")
    the_training_job(instance, again)
    cell_log = (workdir / CELL_LOG).read_text(errors="replace")
    assert "finished before: its model and log are handed back" in cell_log, cell_log[-3000:]
    assert "one task per node" not in cell_log and "starting from the base model" not in cell_log, cell_log[-3000:]
    assert_one_process_log(workdir, one_process)


def test_fsdp_across_two_nodes_shards_over_both_and_trains_like_one_process(tmp_path, slurm_of_four_cpus,
                                                                          one_process):
    instance = slurm_of_four_cpus
    config = two_task_config(fsdp="full_shard auto_wrap", fsdp_transformer_layer_cls="LlamaDecoderLayer")
    workdir = two_task_workflow(one_process, tmp_path, config)
    # train.py through tests/fsdp_train.py; its tasks and ranks run the same command
    (workdir / "tests").mkdir()
    shutil.copy2(REPO / "tests" / "fsdp_train.py", workdir / "tests" / "fsdp_train.py")
    rule = workdir / "workflow" / "rules" / "train.smk"
    assert rule.read_text().count("python scripts/train.py ") == 1
    rule.write_text(rule.read_text().replace("python scripts/train.py ", "python tests/fsdp_train.py "))

    log = run_on_slurm(instance, workdir)
    the_training_job(instance, log)
    cell_log = (workdir / CELL_LOG).read_text(errors="replace")
    assert "2 processes, FSDP2 (full_shard auto_wrap), SHARDED_STATE_DICT checkpoints" in cell_log, cell_log[-3000:]
    shards = {int(rank): (int(local), int(total), layout, modules)
              for rank, local, total, layout, modules in SHARDS.findall(cell_log)}
    assert sorted(shards) == [0, 1], cell_log[-3000:]
    (local_0, total, *layout_0), (local_1, _, *layout_1) = shards[0], shards[1]
    assert layout_0 == layout_1
    assert layout_0[0] == "(Shard(dim=0),) over 2 ranks" and "2 LlamaDecoderLayer" in layout_0[1], layout_0
    assert local_0 + local_1 == total and abs(local_0 - local_1) < 0.01 * total
    assert_one_process_log(workdir, one_process)
