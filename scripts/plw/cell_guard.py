"""One training per cell at a time, and a finished cell handed back instead of trained again.

A lost Snakemake (a dropped login session, kill -9) leaves its trainings running, and the rerun starts the same
cells again. The first process of a cell holds a lock in the cell's checkpoint folder (flock: the kernel releases
it when the holder dies, however it dies); a second one waits for it, naming the holder. A finished training
keeps hard links to its model and log in that folder under the fingerprint of its run (its arguments, its data
file, the training code and packages), so a rerun of the same run hands them back in seconds instead of training again,
and a run of other settings or code never resumes from checkpoints that are not its own.
"""

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import socket
import time
from pathlib import Path

from plw.io import atomic_path

LOCK = ".lock"
FINISHED = "finished"
FINGERPRINT = "fingerprint.json"
PLW_PACKAGE = Path(__file__).resolve().parent
TRAINING_CODE = [PLW_PACKAGE.parent / "train.py", *sorted(PLW_PACKAGE.glob("*.py"))]
TRAINING_PACKAGES = ("torch", "transformers", "accelerate", "peft")


def run_fingerprint(arguments: dict, data_path: str) -> str:
    """What the training's result depends on: its arguments (not where it writes), its data file, its code and the
    versions of the packages that train."""
    versions = {package: importlib.metadata.version(package) for package in TRAINING_PACKAGES}
    digest = hashlib.sha256(json.dumps([arguments, versions], sort_keys=True).encode())
    data = Path(data_path).stat()
    digest.update(f"{data.st_size}:{data.st_mtime_ns}".encode())
    for path in TRAINING_CODE:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def hold_cell_lock(directory: str | Path, poll_seconds: float = 10) -> int:
    """Take the cell's lock, waiting while another process holds it; return its file descriptor, inheritable so
    that torchrun, exec'd in this process, keeps holding it. The lock ends with the process."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if not announced:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "an unknown process"
                print(f"{directory}: this cell is being trained by {holder}; waiting for it to end", flush=True)
                announced = True
            time.sleep(poll_seconds)
    os.ftruncate(fd, 0)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    os.set_inheritable(fd, True)
    return fd


def _link_tree(source: Path, destination: Path) -> None:
    """Hard links (no copy of the weights) of `source` at `destination`, written atomically."""
    with atomic_path(destination) as tmp:
        if source.is_dir():
            shutil.copytree(source, tmp, copy_function=os.link)
        else:
            os.link(source, tmp)


def recorded_fingerprint(directory: str | Path) -> str | None:
    """The fingerprint of the run whose checkpoints (or, in `finished`, whose result) the folder holds."""
    marker = Path(directory) / FINGERPRINT
    return json.loads(marker.read_text()) if marker.is_file() else None


def restore_finished(directory: str | Path, fingerprint: str, model_output: str, log_output: str) -> bool:
    """Hand back the finished result of this same run, if there is one."""
    finished = Path(directory) / FINISHED
    if recorded_fingerprint(finished) != fingerprint:
        return False
    _link_tree(finished / "model", Path(model_output))
    _link_tree(finished / "train_log.parquet", Path(log_output))
    return True


def discard_other_runs(directory: str | Path, fingerprint: str) -> None:
    """Remove checkpoints and a finished result made by other arguments, data or code, then mark the folder as
    this run's, so that a resumed training continues only its own checkpoints."""
    directory = Path(directory)
    if recorded_fingerprint(directory) == fingerprint:
        return
    for path in directory.iterdir():
        if path.name != LOCK:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (directory / FINGERPRINT).write_text(json.dumps(fingerprint))


def keep_finished(directory: str | Path, fingerprint: str, model_output: str, log_output: str) -> None:
    """Keep hard links to the final model and log under this run's fingerprint; drop the checkpoints."""
    directory = Path(directory)
    with atomic_path(directory / FINISHED) as tmp:
        tmp.mkdir()
        shutil.copytree(model_output, tmp / "model", copy_function=os.link)
        os.link(log_output, tmp / "train_log.parquet")
        (tmp / FINGERPRINT).write_text(json.dumps(fingerprint))
    for checkpoint in directory.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)
