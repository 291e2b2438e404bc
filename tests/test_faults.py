"""Fault tolerance of a real Snakemake run of a reduced demo: interrupts, a failing benchmark, --keep-going."""

import base64
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from workflow_runner import REPO, copy_workflow, job_counts, run_snakemake

pytestmark = pytest.mark.slow


def reduced_config(**changes) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"] = {"demo": config["datasets"]["demo"]}
    config["plw"] = [0, 1]
    config["benchmarks"] = {name: {**config["benchmarks"][name], "limit": 8} for name in ("capitals", "opposites")}
    config["training"] = {**config["training"], "max_steps": 4, "save_steps": 2}
    judged = config["judged_benchmarks"]["descriptions"]
    config["judged_benchmarks"] = {"descriptions": {**judged, "data": {**judged["data"], "max_records": 4},
                                                    "max_new_tokens": 16}}
    # the beta model (R) has its own tests: these plan the same jobs on a machine with R and without
    config["analysis"] = {**config.get("analysis", {}), "bootstrap_samples": 0, "beta_model": False}
    config.update(changes)
    return config


UNJUDGED = {"judges": {}, "judged_benchmarks": {}}


def reduced_workflow(tmp_path: Path, **changes) -> Path:
    workdir = copy_workflow(tmp_path / "workflow")
    (workdir / "config" / "reduced.yaml").write_text(yaml.safe_dump(reduced_config(**changes)))
    return workdir


@pytest.fixture
def reduced(tmp_path) -> Path:
    return reduced_workflow(tmp_path)


@pytest.fixture
def reduced_unjudged(tmp_path) -> Path:
    """The reduced demo without its judged benchmark, for the tests that follow the trainings and evaluations (the
    first test runs the judged jobs)."""
    return reduced_workflow(tmp_path, **UNJUDGED)


def planned_jobs(workdir: Path) -> dict[str, int]:
    """Jobs that a run would execute now, per rule, from the dry run's job-stats table."""
    return job_counts(run_snakemake(workdir, "-n", "--configfile", "config/reduced.yaml").stdout)


def assert_no_partial_outputs(workdir: Path) -> None:
    results = workdir / "results"
    assert not [path for path in results.rglob("*.tmp-*")], "a temporary output was left behind"
    for path in results.rglob("*.parquet"):
        pd.read_parquet(path)  # every Parquet under its final name is complete


def finished_by_snakemake(workdir: Path, output: Path) -> bool:
    """Snakemake records an output's metadata (under its path in base64) once the job that made it finished."""
    name = base64.b64encode(str(output.relative_to(workdir)).encode()).decode()
    return (workdir / ".snakemake" / "metadata" / name).exists()


def finished_outputs(workdir: Path) -> int:
    metadata = workdir / ".snakemake" / "metadata"
    return len(list(metadata.iterdir())) if metadata.exists() else 0


def interrupt_sweep(workdir: Path, how: signal.Signals, until) -> None:
    """Start the sweep, wait until `until()` holds, then interrupt Snakemake (and, for SIGKILL, its jobs)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log_path = workdir.parent / f"sweep_{how.name}.log"
    with log_path.open("w") as log:
        # a shell's background job (CI's, say) ignores SIGINT, and its children inherit that: restore Ctrl-C
        process = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile",
                                    "config/reduced.yaml"], cwd=workdir, env=env, start_new_session=True,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 600
    while not until():
        assert process.poll() is None and time.monotonic() < deadline, "the sweep ended before the interrupt"
        time.sleep(0.2)
    if how == signal.SIGINT:
        # Ctrl-C until Snakemake says it stops ("... on user request"): it swallows one that lands while it
        # writes a log line; none after that, since one during its shutdown could orphan the running job
        while process.poll() is None and "on user request" not in log_path.read_text():
            process.send_signal(signal.SIGINT)
            time.sleep(2)
        process.wait(timeout=300)
    else:
        os.killpg(process.pid, signal.SIGKILL)  # like a lost login node: Snakemake and its jobs die at once
        process.wait(timeout=300)
        run_snakemake(workdir, "--unlock", "--configfile", "config/reduced.yaml")
    assert_no_partial_outputs(workdir)


def test_interrupted_sweep_resumes_with_only_the_missing_jobs(reduced):
    total = planned_jobs(reduced)
    # Ctrl-C once the first training finished ...
    models = reduced / "results" / "models"
    interrupt_sweep(reduced, signal.SIGINT,
                    until=lambda: any(finished_by_snakemake(reduced, log) for log in models.rglob("train_log.parquet")))
    after_ctrl_c = planned_jobs(reduced)
    # the finished training(s) are not planned again; Snakemake may have finished the job it was running
    assert after_ctrl_c.get("train", 0) < total["train"], (total, after_ctrl_c)
    assert 0 < sum(after_ctrl_c.values()) < sum(total.values()), (total, after_ctrl_c)

    # ... then, resumed, killed with its jobs once one more job finished
    finished_before = finished_outputs(reduced)
    interrupt_sweep(reduced, signal.SIGKILL, until=lambda: finished_outputs(reduced) > finished_before)
    remaining = planned_jobs(reduced)
    assert 0 < sum(remaining.values()) < sum(after_ctrl_c.values()), (after_ctrl_c, remaining)

    finished = run_snakemake(reduced, "--cores", "2", "--configfile", "config/reduced.yaml")
    steps = re.findall(r"(\d+) of (\d+) steps \(100%\) done", finished.stdout + finished.stderr)
    assert steps and int(steps[-1][1]) == sum(remaining.values())
    assert planned_jobs(reduced) == {}
    assert_no_partial_outputs(reduced)
    # the cost table lists every training and evaluation job, measured
    config = reduced_config()
    costs = pd.read_parquet(reduced / "results" / "tables" / "cost.parquet")
    trainings, benchmarks = len(config["plw"]), len(config["benchmarks"])
    assert costs["stage"].value_counts().to_dict() == {"evaluate": trainings * benchmarks, "train": trainings,
                                                       "evaluate_base": benchmarks, "generate": trainings,
                                                       "judge": trainings}
    assert (costs["wall_s"] > 0).all() and (costs["max_rss_mb"] > 0).all()
    assert (costs["gpus"] == 0).all() and (costs["gpu_hours"] == 0).all()  # this machine has no GPU
    assert "| all | " in (reduced / "results" / "tables" / "cost.md").read_text()
    # the judged benchmark: every cell's 4 answers judged, its win rate scored as the cell's evaluation
    scores = pd.read_parquet(reduced / "results" / "scores.parquet")
    win_rates = scores[(scores["benchmark"] == "descriptions") & scores["primary"]]
    assert sorted(win_rates["plw"]) == sorted(config["plw"]) and (win_rates["metric"] == "win_rate").all()
    assert win_rates["score"].between(0, 1).all() and (win_rates["n_samples"] == 4).all()
    for cell in (reduced / "results" / "judgments").rglob("descriptions.parquet"):
        verdicts = pd.read_parquet(cell)
        assert len(verdicts) == 4 and verdicts["preference"].isin([1.0, 1.5, 2.0]).all()
        assert verdicts["output"].str.len().gt(0).all() and (verdicts["judge"] == "demo-judge").all()
    # the mechanism measures: a row per cell, the loss varied and the weights moved
    mechanisms = pd.read_parquet(reduced / "results" / "tables" / "mechanisms.parquet")
    assert sorted(mechanisms["plw"]) == sorted(config["plw"])
    assert (mechanisms["loss_rsd"] > 0).all() and (mechanisms["weight_l2"] > 0).all()
    assert mechanisms["memorization_bleu"].between(0, 100).all() and (mechanisms["memorization_prompts"] > 0).all()
    # the HTML report holds every figure and table, the mechanisms' among them
    run_snakemake(reduced, "--report", "results/report.html", "--configfile", "config/reduced.yaml")
    report = (reduced / "results" / "report.html").read_text(encoding="utf-8", errors="replace")
    for name in ("aggregate_vs_wp.png", "benchmarks_vs_wp.png", "mechanisms_vs_wp.png", "regression.md",
                 "mechanisms.md", "cost.md"):
        assert name in report, f"{name} is not in the report"


def test_failed_benchmark_leaves_the_others_done_and_reruns_alone(reduced_unjudged):
    reduced = reduced_unjudged
    # prefetch checks every benchmark's data first; break one benchmark's items after it, so that only that
    # benchmark's evaluations fail
    run_snakemake(reduced, *(f"results/prefetch/metrics/{name}.json" for name in ("capitals", "opposites")),
                  "--cores", "1", "--configfile", "config/reduced.yaml")
    items = reduced / "resources" / "demo" / "benchmark_items" / "opposites.jsonl"
    good_items = items.read_text()
    items.write_text("{not json\n")

    result = run_snakemake(reduced, "--cores", "2", "--keep-going", "--configfile", "config/reduced.yaml",
                           check=False)
    assert result.returncode != 0
    evals = reduced / "results" / "eval" / "tiny-llama"
    assert len(list(evals.rglob("capitals.parquet"))) == 3  # two cells and the base model
    assert not list(evals.rglob("opposites.parquet"))

    # --keep-going: scores.parquet is built from what finished and lists the missing cells
    scores = pd.read_parquet(reduced / "results" / "scores.parquet")
    missing = scores[scores["status"] == "missing"]
    assert sorted(missing["benchmark"].unique()) == ["opposites"] and len(missing) == 3
    assert (scores.loc[scores["status"] == "ok", "benchmark"] == "capitals").all()
    # ... and regression.md describes the same partial data
    regression = (reduced / "results" / "tables" / "regression.md").read_text()
    assert regression.count("| opposites | missing |") == 3, regression

    items.write_text(good_items)
    remaining = planned_jobs(reduced)
    assert remaining.get("evaluate") == 2 and remaining.get("evaluate_base") == 1
    assert "train" not in remaining
    run_snakemake(reduced, "--cores", "2", "--configfile", "config/reduced.yaml")
    scores = pd.read_parquet(reduced / "results" / "scores.parquet")
    assert (scores["status"] == "ok").all()

    # on the finished sweep, an evaluation result deleted by hand is made again
    (evals / "base" / "capitals.parquet").unlink()
    assert planned_jobs(reduced)["evaluate_base"] == 1
    run_snakemake(reduced, "--cores", "2", "--configfile", "config/reduced.yaml")

    # a config change plans all the jobs it needs in one run, and only those
    config = reduced_config(**UNJUDGED)
    config["benchmarks"]["capitals"]["metric"] = "acc"  # every metric is kept: no evaluation reruns
    (reduced / "config" / "reduced.yaml").write_text(yaml.safe_dump(config))
    assert planned_jobs(reduced) == {"check_metric": 1, "collect_scores": 1, "fit_regression": 1,
                                     "make_figures": 1, "all": 1}
    config["benchmarks"]["capitals_again"] = config["benchmarks"]["capitals"]  # a new benchmark
    (reduced / "config" / "reduced.yaml").write_text(yaml.safe_dump(config))
    planned = planned_jobs(reduced)
    assert (planned["prefetch_benchmark"], planned["check_metric"], planned["evaluate"], planned["evaluate_base"]) \
        == (1, 2, 2, 1), planned
    assert "train" not in planned


def test_after_a_lost_snakemake_every_cell_trains_once_and_as_if_never_interrupted(reduced_unjudged, tmp_path):
    """kill -9 of Snakemake alone (a dropped login session): its training goes on as an orphan. After --unlock,
    the same command reruns that cell's job (its outputs are incomplete to Snakemake), whose training waits for
    the orphan and takes its result, or takes the result the orphan left, instead of training again."""
    reduced = reduced_unjudged
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "config/reduced.yaml"]
    with (tmp_path / "lost.log").open("w") as log:
        head = subprocess.Popen(command, cwd=reduced, env=env, start_new_session=True, stdout=log,
                                stderr=subprocess.STDOUT)
    checkpoints = reduced / "results" / "checkpoints"
    deadline = time.monotonic() + 600
    while not list(checkpoints.rglob("fingerprint.json")):  # a training has taken its cell
        assert head.poll() is None and time.monotonic() < deadline, "the sweep ended before a training started"
        time.sleep(0.1)
    head.kill()
    head.wait()
    orphaned = [path.parent.relative_to(checkpoints) for path in checkpoints.rglob("fingerprint.json")]
    assert len(orphaned) == 1, orphaned

    run_snakemake(reduced, "--unlock", "--configfile", "config/reduced.yaml")
    run_snakemake(reduced, "--cores", "2", "--configfile", "config/reduced.yaml")

    assert planned_jobs(reduced) == {}
    cell_log = (reduced / "results" / "logs" / "train" / f"{orphaned[0]}.log").read_text(errors="replace")
    # the rerun's process for the orphan's cell: it either waited for the orphan or found its finished result
    assert "handed back" in cell_log, cell_log[-3000:]
    assert cell_log.count("starting from the base model") <= 1, "the rerun trained the orphan's cell again"
    # every cell's result is what an uninterrupted training gives
    reference = copy_workflow(tmp_path / "reference")
    (reference / "config" / "reduced.yaml").write_text(yaml.safe_dump(reduced_config(**UNJUDGED)))
    logs = sorted(path.relative_to(reduced) for path in (reduced / "results" / "models").rglob("train_log.parquet"))
    run_snakemake(reference, *map(str, logs), "--cores", "2", "--configfile", "config/reduced.yaml")
    for path in logs:
        pd.testing.assert_frame_equal(pd.read_parquet(reduced / path).drop(columns=["code_commit", "code_modified"]),
                                      pd.read_parquet(reference / path).drop(columns=["code_commit", "code_modified"]),
                                      rtol=1e-5)
