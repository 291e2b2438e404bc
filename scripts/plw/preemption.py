"""Save and stop before the job ends, so that a preempted or timed-out training resumes instead of starting over.

Two warnings stop a training at the end of its current optimizer step, after saving a checkpoint:
- the job's Slurm time limit coming within `margin` (the end time is asked of squeue once, at the start);
- SIGTERM, which Slurm sends every process of a job it preempts or cancels (SIGKILL follows after KillWait
  seconds: the save must fit in them), or SIGUSR1 sent to the training itself.
train.py then exits non-zero without writing the final outputs, and Snakemake's retry (or Slurm's requeue)
resumes from the checkpoint. (Slurm's `--signal` option is no substitute: it signals every process of the job
step, and the Snakemake process that runs the training has no handler for it and dies.)
"""

import os
import signal
import subprocess
import time
from datetime import datetime

import torch
from transformers import TrainerCallback

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


def slurm_job_end() -> float | None:
    """When this Slurm job's time runs out (seconds since the epoch); None outside Slurm or without a limit."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        end = subprocess.run(["squeue", "--noheader", "--jobs", job, "--format", "%e"], capture_output=True,
                             text=True, timeout=60, check=True).stdout.strip()
        return datetime.fromisoformat(end).timestamp()
    except (OSError, subprocess.SubprocessError, ValueError):  # no squeue here, or "N/A", "NONE": no limit
        return None


class SaveAndStop(TrainerCallback):
    """Catches STOP_SIGNALS while installed (during trainer.train() only: before it, a signal ends the process as
    usual) and watches the job's end; all ranks stop at the same step."""

    def __init__(self, job_end: float | None = None, margin_seconds: float = 0):
        self.job_end = job_end
        self.deadline = None if job_end is None else job_end - margin_seconds
        self.reason = None
        self._previous = {}

    def install(self) -> None:
        self._previous = {number: signal.signal(number, self._receive) for number in STOP_SIGNALS}

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _receive(self, number, frame) -> None:
        self.reason = signal.Signals(number).name
        print(f"{self.reason}: saving a checkpoint at the end of this step, then stopping", flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.reason is None and self.deadline is not None and time.time() >= self.deadline:
            self.reason = f"the job's time limit (it ends at {time.strftime('%H:%M', time.localtime(self.job_end))})"
        stop = torch.tensor(float(self.reason is not None))
        if args.world_size > 1:  # a signal may reach one rank only: the step to stop at must be the same
            stop = stop.to(args.device)
            torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
        if stop.item():
            self.reason = self.reason or "a signal to another rank"
            control.should_save = True
            control.should_training_stop = True
        return control
