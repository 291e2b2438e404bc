"""Training on several ranks: two CPU ranks over gloo under data parallelism (DDP), and the paper's setting,
`fsdp: full_shard auto_wrap` (train.py with the model sharded by FSDP2), against one process."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainingArguments

from train import fsdp_config, last_complete_checkpoint
from training_helpers import train_command

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
FSDP_TRAIN = str(REPO / "tests" / "fsdp_train.py")
ENV = {**os.environ, "PYTHONPATH": str(REPO / "scripts"), "OMP_NUM_THREADS": "1"}
SHARDS = re.compile(r"rank (\d): (\d+) of (\d+) parameter values, (.+); FSDP modules: (.+)")


@pytest.fixture(scope="module")
def fsdp_settings(training_settings):
    """The paper's FSDP setting; 16 records a step: one process accumulates 4 micro-batches of 4, each rank 2."""
    return {**training_settings, "fsdp": "full_shard auto_wrap", "fsdp_transformer_layer_cls": "LlamaDecoderLayer",
            "global_batch_size": 16}


def sharded_command(tmp_path: Path, data: Path, base: Path, name: str, settings: dict) -> list:
    """train.py's command line, run on two CPU ranks with FSDP (tests/fsdp_train.py)."""
    return [*TORCHRUN, FSDP_TRAIN, *train_command(tmp_path, data, base, name, settings)[2:]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, demo_parquet, fsdp_settings):
    """train.py as one process and on two FSDP ranks: their directories and the FSDP run's output."""
    tmp_path = tmp_path_factory.mktemp("runs")
    subprocess.run(train_command(tmp_path, demo_parquet, tiny_model_dir, "one", fsdp_settings), env=ENV,
                   check=True, capture_output=True, timeout=300)
    sharded = subprocess.run(sharded_command(tmp_path, demo_parquet, tiny_model_dir, "fsdp", fsdp_settings),
                             env=ENV, capture_output=True, text=True, timeout=300)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    return tmp_path / "one", tmp_path / "fsdp", sharded.stdout


@pytest.mark.parametrize("option, reshard", [("full_shard auto_wrap", True), ("shard_grad_op auto_wrap", False)])
def test_the_config_option_is_fsdp2_in_transformers_recommended_form(training_settings, option, reshard):
    settings = {**training_settings, "fsdp": option, "fsdp_transformer_layer_cls": "LlamaDecoderLayer"}
    args = TrainingArguments(output_dir="unused", fsdp=True, fsdp_config=fsdp_config(settings))
    assert args.fsdp_plugin_args == {
        "fsdp_version": 2, "reshard_after_forward": reshard, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_cls_names_to_wrap": "LlamaDecoderLayer", "cpu_ram_efficient_loading": False,
        "state_dict_type": "SHARDED_STATE_DICT", "activation_checkpointing": False}


@pytest.mark.slow
def test_two_fsdp_ranks_shard_the_model_and_train_like_one_process(runs):
    """FSDP changes where the parameters live, not the training: the log and the final model are the one
    process's (though the chunked loss reads the LM head's weight outside the model's forward, where FSDP2 may
    hold it sharded)."""
    one, sharded, stdout = runs
    assert "2 processes, FSDP2 (full_shard auto_wrap), SHARDED_STATE_DICT checkpoints" in stdout, stdout
    # each rank holds about half of every parameter: a DTensor sharded on dim 0 over the 2 ranks, gathered
    # decoder layer by decoder layer (auto_wrap), the embedding and the final norm with the head on their own
    shards = {int(rank): (int(local), int(total), layout, modules)
              for rank, local, total, layout, modules in SHARDS.findall(stdout)}
    assert sorted(shards) == [0, 1], stdout
    (local_0, total, *layout_0), (local_1, _, *layout_1) = shards[0], shards[1]
    units = "1 Embedding, 1 Linear, 2 LlamaDecoderLayer, 1 LlamaForCausalLM, 1 LlamaRMSNorm"
    assert layout_0 == layout_1 == ["(Shard(dim=0),) over 2 ranks", units]
    assert local_0 + local_1 == total and abs(local_0 - local_1) < 0.01 * total

    # the same 16 records a step: the same loss and gradient norm, step after step
    log, sharded_log = (pd.read_parquet(run / "train_log.parquet") for run in (one, sharded))
    assert sharded_log["step"].tolist() == list(range(1, 13)) == log["step"].tolist()
    assert sharded_log["tokens"].tolist() == log["tokens"].tolist()
    for key in ("loss", "grad_norm", "weight_sum"):
        assert sharded_log[key].to_numpy() == pytest.approx(log[key].to_numpy(), rel=1e-5), key

    # rank 0 gathered the full weights of the final model: those of the one process, saved as its model
    assert (sharded / "model" / "config.json").read_text() == (one / "model" / "config.json").read_text()
    model, sharded_model = (load_file(run / "model" / "model.safetensors") for run in (one, sharded))
    assert sharded_model.keys() == model.keys()
    for name, weight in model.items():
        torch.testing.assert_close(sharded_model[name], weight, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_killed_fsdp_training_resumes_from_its_sharded_checkpoint(runs, tmp_path, tiny_model_dir, demo_parquet,
                                                                  fsdp_settings):
    """A preempted FSDP job resumes from its sharded checkpoint (each rank reads back its own shards) and ends
    as the run that was never killed."""
    command = sharded_command(tmp_path, demo_parquet, tiny_model_dir, "killed", fsdp_settings)
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("checkpoint-*/trainer_state.json")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # as a preempted job dies: torchrun and both ranks at once
    for victim in [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]:
        victim.kill()
    process.wait()
    assert not (tmp_path / "killed" / "model").exists(), "a killed run must leave no final model"
    checkpoint = Path(last_complete_checkpoint(checkpoints))
    # each rank wrote its own shard of the model and of the optimizer state; no rank gathered the full model
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):
        assert sorted(path.name for path in (checkpoint / part).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not list(checkpoint.glob("*.safetensors"))
    # as if killed while writing the next checkpoint: its model shards are there, its trainer_state.json is not
    partial = checkpoints / f"checkpoint-{int(checkpoint.name.split('-')[1]) + fsdp_settings['save_steps']}"
    shutil.copytree(checkpoint / "pytorch_model_fsdp_0", partial / "pytorch_model_fsdp_0", dirs_exist_ok=True)

    resumed = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {checkpoint}" in resumed.stdout, resumed.stdout
    straight = pd.read_parquet(runs[1] / "train_log.parquet")
    again = pd.read_parquet(tmp_path / "killed" / "train_log.parquet")
    assert again["step"].tolist() == straight["step"].tolist()
    for key in ("loss", "grad_norm"):
        assert again[key].to_numpy() == pytest.approx(straight[key].to_numpy(), rel=1e-5), key
    model, again_model = (load_file(run / "model" / "model.safetensors") for run in (runs[1], tmp_path / "killed"))
    for name, weight in model.items():
        torch.testing.assert_close(again_model[name], weight, rtol=1e-5, atol=1e-6, msg=name)
    assert not list(checkpoints.glob("checkpoint-*")), "checkpoints are removed once training completes"


@pytest.mark.slow
def test_fsdp_that_accelerate_does_not_take_is_refused_not_run_as_ddp(tmp_path, tiny_model_dir, demo_parquet,
                                                                     fsdp_settings):
    """Plain train.py on two CPU ranks: Accelerate leaves FSDP off there and would train the ranks under DDP,
    unsharded, with nothing in the log to tell; train.py refuses before training."""
    command = [*TORCHRUN, *train_command(tmp_path, demo_parquet, tiny_model_dir, "refused", fsdp_settings)[1:]]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert ("training.fsdp 'full_shard auto_wrap': Accelerate did not enable FSDP for these 2 processes (it does on "
            "GPUs only); not training them unsharded") in result.stderr + result.stdout
    assert "starting from the base model" not in result.stdout and not (tmp_path / "refused" / "model").exists()


@pytest.mark.slow
def test_two_data_parallel_ranks_give_one_process_gradient_and_log(tiny_model_dir, tmp_path):
    """A real 2-rank run (torchrun, gloo, DDP through the Trainer): 2 ranks × 2 accumulated micro-batches of 4
    records against 1 process × 4 micro-batches of 4; the same 16 records in one optimizer step."""
    step = str(REPO / "tests" / "data_parallel_step.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for command, name in (([sys.executable, step], "one"), ([*torchrun, step], "two")):
        accumulation = "4" if name == "one" else "2"
        result = subprocess.run([*command, str(tiny_model_dir), str(tmp_path / f"{name}.pt"), "4", accumulation],
                                env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = (torch.load(tmp_path / f"{name}.pt") for name in ("one", "two"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for name, gradient in one["gradient"].items():
        assert torch.allclose(gradient, two["gradient"][name], atol=1e-5, rtol=0), name
    # the log counts the step's tokens and weights on every rank, and its loss is Σ w·ℓ / Σ w of the whole step
    assert two["log"]["tokens"] == one["log"]["tokens"] > 0
    for key in ("weight_sum", "loss"):
        assert two["log"][key] == pytest.approx(one["log"][key], rel=1e-6), key
