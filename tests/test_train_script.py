"""scripts/train.py as the train rule runs it: resume after a kill or a warning signal, one process per cell at a
time, a finished run handed back, a bad PLW refused."""

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from training_helpers import REPO, train_command

ENV = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
pytestmark = pytest.mark.slow


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the training ended before {path} appeared"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, tiny_model_dir, demo_parquet, training_settings) -> Path:
    """One uninterrupted training of the demo cell: the reference log."""
    tmp_path = tmp_path_factory.mktemp("straight")
    subprocess.run(train_command(tmp_path, demo_parquet, tiny_model_dir, "run", training_settings),
                   check=True, env=ENV, capture_output=True)
    return tmp_path / "run"


def test_plw_outside_0_1_is_refused_before_the_model_loads(tmp_path, training_settings):
    command = train_command(tmp_path, tmp_path / "missing.parquet", tmp_path / "no-model", "bad",
                            training_settings, plw="1.5")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--plw 1.5: the prompt-loss weight must lie in [0, 1]" in result.stderr
    assert "Traceback" not in result.stderr


def test_killed_training_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_run(
        tmp_path, tiny_model_dir, demo_parquet, training_settings, straight_run):
    command = train_command(tmp_path, demo_parquet, tiny_model_dir, "killed", training_settings)
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_checkpoint = tmp_path / "killed" / "checkpoints" / "checkpoint-4"
    deadline = time.monotonic() + 300
    while not (first_checkpoint / "trainer_state.json").exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "model").exists(), "a killed run must leave no final model"
    # as if killed while writing the next checkpoint: its weights are there, its trainer_state.json is not yet
    partial = first_checkpoint.with_name("checkpoint-8")
    partial.mkdir(exist_ok=True)
    shutil.copy(first_checkpoint / "model.safetensors", partial)

    resumed = subprocess.run(command, check=True, env=ENV, capture_output=True, text=True)
    assert f"resuming from {first_checkpoint}" in resumed.stdout, resumed.stdout
    straight = pd.read_parquet(straight_run / "train_log.parquet")
    again = pd.read_parquet(tmp_path / "killed" / "train_log.parquet")
    assert straight["step"].tolist() == list(range(1, 13)) == again["step"].tolist()
    assert again["loss"].iloc[-1] == pytest.approx(straight["loss"].iloc[-1], rel=1e-5)
    assert (straight["weight_sum"] > 0).all() and (straight["tokens"] > 0).all()
    kept = sorted(path.name for path in (tmp_path / "killed" / "checkpoints").iterdir())
    assert kept == [".lock", "fingerprint.json", "finished"], "checkpoints are removed once training completes"


def test_a_warning_signal_saves_a_checkpoint_and_the_rerun_resumes_to_the_same_log(
        tmp_path, tiny_model_dir, demo_parquet, training_settings, straight_run):
    # one step at a time, so the signal lands between two checkpoints (save_steps 4)
    command = train_command(tmp_path, demo_parquet, tiny_model_dir, "signalled", training_settings)
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoints = tmp_path / "signalled" / "checkpoints"
    wait_for(checkpoints / "checkpoint-4" / "trainer_state.json", process)
    process.send_signal(signal.SIGUSR1)
    output = process.communicate(timeout=300)[0]

    assert process.returncode != 0, output[-2000:]
    saved = re.search(r"stopped on SIGUSR1 after saving checkpoint-(\d+); a rerun resumes from it", output)
    assert saved, output[-2000:]
    step = int(saved.group(1))
    assert 4 < step < 12, "the signal must stop the training between checkpoints, not at its end"
    assert (checkpoints / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert not (tmp_path / "signalled" / "model").exists()

    resumed = subprocess.run(command, check=True, env=ENV, capture_output=True, text=True)
    assert f"resuming from {checkpoints / f'checkpoint-{step}'}" in resumed.stdout
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "signalled" / "train_log.parquet"),
                                  pd.read_parquet(straight_run / "train_log.parquet"), rtol=1e-5)


def test_near_the_slurm_time_limit_a_training_saves_stops_and_the_retry_resumes_to_the_same_log(
        tmp_path, tiny_model_dir, demo_parquet, training_settings, straight_run):
    # a Slurm job whose time runs out in 100 s, with a 2-minute margin: the first step ends past the deadline
    squeue = tmp_path / "bin" / "squeue"
    squeue.parent.mkdir()
    squeue.write_text('#!/bin/sh\ndate -d "+100 seconds" +%Y-%m-%dT%H:%M:%S\n')
    squeue.chmod(0o755)
    env = {**ENV, "SLURM_JOB_ID": "4242", "PATH": f"{squeue.parent}:{os.environ['PATH']}"}
    settings = {**training_settings, "time_limit_margin_minutes": 2}
    command = train_command(tmp_path, demo_parquet, tiny_model_dir, "limited", settings)
    started = time.monotonic()
    stopped = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    assert stopped.returncode != 0 and time.monotonic() - started < 100
    saved = re.search(r"stopped on the job's time limit \(it ends at \d\d:\d\d\) after saving "
                      r"checkpoint-(\d+); a rerun resumes from it", stopped.stderr)
    assert saved, stopped.stderr[-2000:]
    assert saved.group(1) == "1"
    checkpoint = tmp_path / "limited" / "checkpoints" / "checkpoint-1"
    assert (checkpoint / "trainer_state.json").is_file() and not (tmp_path / "limited" / "model").exists()

    resumed = subprocess.run(command, env=ENV, check=True, capture_output=True, text=True)  # the retry, in time
    assert f"resuming from {checkpoint}" in resumed.stdout
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "limited" / "train_log.parquet"),
                                  pd.read_parquet(straight_run / "train_log.parquet"), rtol=1e-5)


def test_a_second_training_of_a_cell_waits_for_the_first_and_takes_its_result(
        tmp_path, tiny_model_dir, demo_parquet, training_settings, straight_run):
    """What a rerun after a lost Snakemake does: the cell's orphaned training still runs when its copy starts."""
    command = train_command(tmp_path, demo_parquet, tiny_model_dir, "cell", training_settings)
    first = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(tmp_path / "cell" / "checkpoints" / "fingerprint.json", first)
    second = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    first_output = first.communicate(timeout=300)[0]

    assert first.returncode == 0, first_output[-2000:]
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert f'"pid": {first.pid}' in second.stdout and "waiting for it to end" in second.stdout
    assert "finished before: its model and log are handed back" in second.stdout
    assert "starting from the base model" in first_output and "starting from" not in second.stdout
    log = pd.read_parquet(tmp_path / "cell" / "train_log.parquet")
    pd.testing.assert_frame_equal(log, pd.read_parquet(straight_run / "train_log.parquet"), rtol=1e-5)
    assert (tmp_path / "cell" / "model" / "model.safetensors").stat().st_nlink == 2


def test_a_finished_run_is_handed_back_and_other_settings_train_afresh(
        tmp_path, tiny_model_dir, demo_parquet, training_settings, straight_run):
    shutil.copytree(straight_run.parent, tmp_path, dirs_exist_ok=True, symlinks=True)
    # Snakemake deletes a job's outputs before it reruns it
    shutil.rmtree(tmp_path / "run" / "model")
    (tmp_path / "run" / "train_log.parquet").unlink()
    same = subprocess.run(train_command(tmp_path, demo_parquet, tiny_model_dir, "run", training_settings),
                          env=ENV, capture_output=True, text=True, check=True)
    assert "handed back" in same.stdout and "starting from" not in same.stdout
    assert (tmp_path / "run" / "model" / "config.json").is_file()

    other = {**training_settings, "max_steps": 4}
    retrained = subprocess.run(train_command(tmp_path, demo_parquet, tiny_model_dir, "run", other), env=ENV,
                               capture_output=True, text=True, check=True)
    assert "starting from the base model" in retrained.stdout
    assert pd.read_parquet(tmp_path / "run" / "train_log.parquet")["step"].tolist() == [1, 2, 3, 4]


def test_tracking_writes_a_tensorboard_log_and_the_model_is_saved_in_the_asked_precision(
        tmp_path, tiny_model_dir, demo_parquet, training_settings):
    from safetensors import safe_open
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    settings = {**training_settings, "max_steps": 4, "report_to": ["tensorboard"], "save_dtype": "bfloat16"}
    command = [*train_command(tmp_path, demo_parquet, tiny_model_dir, "tracked", settings),
               "--tracking", str(tmp_path / "tracking"), "--run-name", "tiny-llama/demo/plw-0.1/seed-42"]
    subprocess.run(command, check=True, env=ENV, capture_output=True)

    events = EventAccumulator(str(tmp_path / "tracking")).Reload()
    losses = [event.value for event in events.Scalars("train/loss")]
    log = pd.read_parquet(tmp_path / "tracked" / "train_log.parquet")
    assert losses == pytest.approx(log["loss"].tolist(), rel=1e-6)
    with safe_open(tmp_path / "tracked" / "model" / "model.safetensors", "pt") as weights:
        assert {str(weights.get_tensor(name).dtype) for name in weights.keys()} == {"torch.bfloat16"}
