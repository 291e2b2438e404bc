"""After a lost Snakemake on Slurm: wait for the trainings it left queued or running in this workflow directory.

Without this, the rerun submits those cells again, and each copy would hold its GPUs idle while it waits for the
old job's cell lock (plw.cell_guard). Jobs are found by the comment the Slurm executor gives them
(`rule_train_...`) and by their working directory, so another workflow's trainings are not waited for.
"""

import os
import subprocess
import time


def orphaned_trainings(workdir: str) -> list[str] | None:
    """'job id (state)' of this user's queued or running train jobs in `workdir`; none without a Slurm client,
    None when squeue failed this time (a busy controller: ask again)."""
    try:
        listing = subprocess.run(["squeue", "--me", "--noheader", "--format", "%i|%T|%Z|%k"], capture_output=True,
                                 text=True, timeout=60, check=True).stdout
    except FileNotFoundError:
        return []
    except (OSError, subprocess.SubprocessError):
        return None
    jobs = []
    for line in listing.splitlines():
        job_id, state, directory, comment = line.split("|", 3)
        if comment.startswith("rule_train_") and os.path.realpath(directory) == os.path.realpath(workdir):
            jobs.append(f"{job_id} ({state.lower()})")
    return jobs


def wait_for_orphaned_trainings(workdir: str, poll_seconds: float = 30) -> None:
    jobs = orphaned_trainings(workdir) or []
    if jobs:
        print(f"Slurm still runs or queues trainings of an earlier Snakemake in {workdir}: {', '.join(jobs)}. "
              "Waiting for them (their results are taken over, not trained again); scancel them to retrain.",
              flush=True)
    while jobs:
        time.sleep(poll_seconds)
        found = orphaned_trainings(workdir)
        jobs = jobs if found is None else found  # a failed squeue ends no wait
