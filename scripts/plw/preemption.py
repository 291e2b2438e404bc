"""Save and stop on a warning signal, so that a preempted or timed-out training resumes instead of starting over.

Slurm sends a job SIGTERM when it preempts it or its time runs out (then SIGKILL after KillWait seconds), and a
signal of the user's choice ahead of the limit with `--signal=USR1@120`. Either one makes the Trainer save a
checkpoint at the end of the current optimizer step and stop; train.py then exits non-zero without writing the
final outputs, and Snakemake's retry (or Slurm's requeue) resumes from the checkpoint.
"""

import signal

import torch
from transformers import TrainerCallback

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class SaveAndStopOnSignal(TrainerCallback):
    """Catches STOP_SIGNALS while installed (during trainer.train() only: before it, a signal ends the process as
    usual); all ranks stop at the same step."""

    def __init__(self):
        self.received = None
        self._previous = {}

    def install(self) -> None:
        self._previous = {number: signal.signal(number, self._receive) for number in STOP_SIGNALS}

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _receive(self, number, frame) -> None:
        self.received = signal.Signals(number).name
        print(f"{self.received}: saving a checkpoint at the end of this step, then stopping", flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        stop = torch.tensor(float(self.received is not None))
        if args.world_size > 1:  # a signal may reach one rank only: the step to stop at must be the same
            stop = stop.to(args.device)
            torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
        if stop.item():
            self.received = self.received or "a signal to another rank"
            control.should_save = True
            control.should_training_stop = True
        return control
