"""One training per cell at a time (a lock that a second process waits on), and a finished run handed back by
its fingerprint instead of trained again."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plw.cell_guard import (
    FINGERPRINT,
    discard_other_runs,
    hold_cell_lock,
    keep_finished,
    restore_finished,
    run_fingerprint,
)

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def fake_outputs(root: Path) -> tuple[Path, Path]:
    model, log = root / "model", root / "train_log.parquet"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "config.json").write_text("{}")
    log.write_bytes(b"log")
    return model, log


@pytest.mark.slow
def test_a_second_process_waits_for_the_cell_lock_and_names_its_holder(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from plw.cell_guard import hold_cell_lock; "
         "hold_cell_lock(sys.argv[1]); print('held', flush=True); time.sleep(3)", str(tmp_path / "cell")],
        cwd=SCRIPTS, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()

    hold_cell_lock(tmp_path / "cell", poll_seconds=0.2)

    waited = time.monotonic() - started
    assert holder.poll() is not None, "the lock was taken while its holder still ran"
    assert waited > 1
    message = capsys.readouterr().out
    assert f'"pid": {holder.pid}' in message and "waiting for it to end" in message
    # the new holder recorded itself
    assert json.loads((tmp_path / "cell" / ".lock").read_text())["pid"] != holder.pid


def test_a_finished_run_is_handed_back_only_for_the_same_fingerprint(tmp_path):
    cell = tmp_path / "checkpoints"
    cell.mkdir()
    model, log = fake_outputs(tmp_path / "outputs")
    keep_finished(cell, "run-a", str(model), str(log))
    # Snakemake deletes the outputs of a job it reruns
    for path in model.iterdir():
        path.unlink()
    model.rmdir()
    log.unlink()

    assert not restore_finished(cell, "run-b", str(model), str(log))
    assert not model.exists()
    assert restore_finished(cell, "run-a", str(model), str(log))
    assert (model / "model.safetensors").read_bytes() == b"weights" and log.read_bytes() == b"log"
    assert (model / "model.safetensors").stat().st_nlink == 2, "a hard link, not a copy of the weights"


def test_checkpoints_of_another_run_are_discarded_and_the_own_are_kept(tmp_path):
    cell = tmp_path / "checkpoints"
    hold_cell_lock(cell)
    discard_other_runs(cell, "run-a")
    (cell / "checkpoint-2").mkdir()
    discard_other_runs(cell, "run-a")
    assert (cell / "checkpoint-2").is_dir()

    discard_other_runs(cell, "run-b")

    assert sorted(path.name for path in cell.iterdir()) == [".lock", FINGERPRINT]
    assert json.loads((cell / FINGERPRINT).read_text()) == "run-b"


def test_the_fingerprint_follows_arguments_and_data(tmp_path):
    data = tmp_path / "data.parquet"
    data.write_bytes(b"a")
    first = run_fingerprint({"plw": 0.1}, str(data))
    assert run_fingerprint({"plw": 0.1}, str(data)) == first
    assert run_fingerprint({"plw": 0.2}, str(data)) != first
    data.write_bytes(b"ab")
    assert run_fingerprint({"plw": 0.1}, str(data)) != first


@pytest.mark.slow
def test_after_a_lost_head_on_slurm_only_this_workflows_trainings_are_waited_for(tmp_path, monkeypatch, capsys):
    from plw import slurm_orphans

    other = tmp_path / "other"
    listing = "\n".join([f"101|RUNNING|{tmp_path}|rule_train_wildcards_m_d_0.1_42",
                         f"102|PENDING|{tmp_path}|rule_train_wildcards_m_d_1_42",
                         f"103|RUNNING|{tmp_path}|rule_evaluate_wildcards_m_d_0.1_42_capitals",
                         f"104|RUNNING|{other}|rule_train_wildcards_m_d_0.1_42"])
    squeue = tmp_path / "bin" / "squeue"
    squeue.parent.mkdir()
    state = tmp_path / "polls"
    # the first two polls list the jobs, then they are gone
    squeue.write_text(f"#!/bin/sh\necho x >> {state}\n[ $(wc -l < {state}) -le 2 ] && printf '%s\\n' '{listing}'\n"
                      "exit 0\n")
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{squeue.parent}:{os.environ['PATH']}")

    assert slurm_orphans.orphaned_trainings(str(tmp_path)) == ["101 (running)", "102 (pending)"]
    slurm_orphans.wait_for_orphaned_trainings(str(tmp_path), poll_seconds=0.01)

    assert len(state.read_text().splitlines()) == 3  # waited until squeue listed none
    assert "101 (running), 102 (pending). Waiting for them" in capsys.readouterr().out


def test_a_failing_squeue_does_not_end_the_wait(tmp_path, monkeypatch):
    from plw import slurm_orphans

    answers = iter([["101 (running)"], None, ["101 (running)"], []])
    monkeypatch.setattr(slurm_orphans, "orphaned_trainings", lambda workdir: next(answers))
    slurm_orphans.wait_for_orphaned_trainings(str(tmp_path), poll_seconds=0)
    assert next(answers, "all asked") == "all asked"
