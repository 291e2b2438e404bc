"""Evaluation jobs as the workflow runs them: scripts/evaluate.py with the real lm-eval on the tiny model and the
local demo tasks, its tidy Parquet rows, and its refusals before anything heavy loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = pytest.mark.slow  # every test runs Snakemake or a script in a subprocess

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
SETTINGS = {"include_path": ["resources/lm_eval_tasks"], "backend": "hf", "batch_size": 16, "log_samples": False,
            "bootstrap_iters": 100, "evaluate_base_models": True}
CELL = {"model": "tiny-llama", "dataset": "demo", "plw": 0.1, "seed": 42}
BASE = {"model": "tiny-llama", "dataset": None, "plw": None, "seed": None}
# Each metric's range as lm-eval reports it: accuracies in [0, 1], BLEU and chrF in [0, 100].
RANGES = {"acc": (0, 1), "acc_norm": (0, 1), "bleu": (0, 100), "chrf": (0, 100)}
MODEL_LOADED = "Loading weights"  # what transformers prints once the model loads


def run_evaluate(model: Path | str, benchmark: str, spec: dict, cell: dict, out: Path, *, local: bool = True):
    """scripts/evaluate.py as the evaluate rule calls it (from the repository root, offline)."""
    command = [sys.executable, "scripts/evaluate.py", "--model-path", str(model), "--cell", json.dumps(cell),
               "--benchmark", benchmark, "--spec", json.dumps(spec), "--settings", json.dumps(SETTINGS),
               "--output", str(out / f"{benchmark}.parquet"), "--output-json", str(out / f"{benchmark}.json")]
    if local:
        command.append("--local-model")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def demo_scores(tiny_model_dir, tmp_path_factory) -> dict[str, pd.DataFrame]:
    """Every demo benchmark scored once: the cell rows of a fine-tuned model (here the tiny base model)."""
    out = tmp_path_factory.mktemp("eval")
    scores = {}
    for benchmark, spec in DEMO_CONFIG["benchmarks"].items():
        result = run_evaluate(tiny_model_dir, benchmark, spec, CELL, out)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        scores[benchmark] = out / f"{benchmark}.parquet"
    return scores


def test_rows_have_the_documented_columns_and_types(demo_scores):
    for path in demo_scores.values():
        schema = pq.read_schema(path)
        assert schema.names == ["model", "dataset", "completion_weight", "plw", "seed", "benchmark", "task", "metric",
                                "value", "stderr", "num_fewshot", "n_samples", "lm_eval_version", "gpus", "code_commit",
                                "code_modified"]
        kinds = {"string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
                 "float64": pa.types.is_float64, "int64": pa.types.is_int64, "bool": pa.types.is_boolean}
        expected = {"model": "string", "dataset": "string", "completion_weight": "float64", "plw": "float64",
                    "seed": "int64",
                    "benchmark": "string", "task": "string", "metric": "string", "value": "float64",
                    "stderr": "float64", "num_fewshot": "int64", "n_samples": "int64", "lm_eval_version": "string",
                    "gpus": "int64", "code_commit": "string", "code_modified": "bool"}
        for name, kind in expected.items():
            assert kinds[kind](schema.field(name).type), (path.name, name, schema.field(name).type)


def test_rows_record_the_commit_of_the_code_that_made_them(demo_scores):
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        pytest.skip("the project is not a git checkout here")
    modified = subprocess.run([*git, "diff", "HEAD", "--quiet", "--", "scripts", "workflow", "Snakefile",
                               "resources", "envs", "requirements.txt"]).returncode == 1
    for path in demo_scores.values():
        rows = pd.read_parquet(path)
        assert set(rows["code_commit"]) == {head.stdout.strip()}
        assert set(rows["code_modified"]) == {modified}


def test_code_version_outside_a_git_checkout_is_unknown(tmp_path, monkeypatch):
    from plw import provenance

    monkeypatch.setattr(provenance, "REPO", tmp_path)
    assert provenance.code_version() == {"code_commit": None, "code_modified": None}


@pytest.mark.parametrize("benchmark", sorted(DEMO_CONFIG["benchmarks"]))
def test_every_configured_metric_is_scored_in_range_with_stderr(demo_scores, benchmark):
    import lm_eval

    spec = DEMO_CONFIG["benchmarks"][benchmark]
    rows = pd.read_parquet(demo_scores[benchmark])
    items = (REPO / "resources/demo/benchmark_items" / f"{spec['task'].removeprefix('demo_')}.jsonl")
    assert spec["metric"] in set(rows["metric"])
    assert rows["metric"].is_unique
    for row in rows.itertuples():
        low, high = RANGES[row.metric]
        assert low <= row.value <= high, row
        assert pd.notna(row.stderr) and row.stderr >= 0, row
        assert (row.model, row.dataset, row.plw, row.seed) == (CELL["model"], CELL["dataset"], CELL["plw"],
                                                               CELL["seed"])
        assert (row.benchmark, row.task, row.num_fewshot) == (benchmark, spec["task"], spec["num_fewshot"])
        assert row.n_samples == len(items.read_text().splitlines())
        assert row.lm_eval_version == lm_eval.__version__


def test_full_lm_eval_results_are_kept_beside_the_rows(demo_scores):
    path = demo_scores["capitals"]
    results = json.loads(path.with_suffix(".json").read_text())
    rows = pd.read_parquet(path)
    acc_norm = rows.set_index("metric").loc["acc_norm", "value"]
    assert results["results"]["demo_capitals"]["acc_norm,none"] == pytest.approx(acc_norm)
    assert results["n-shot"]["demo_capitals"] == 0


def test_base_model_rows_have_null_cell_fields(tiny_model_dir, tmp_path):
    spec = {**DEMO_CONFIG["benchmarks"]["opposites"], "limit": 5}
    result = run_evaluate(tiny_model_dir, "opposites", spec, BASE, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_parquet(tmp_path / "opposites.parquet")
    assert rows["dataset"].isna().all() and rows["plw"].isna().all() and rows["seed"].isna().all()
    assert (rows["n_samples"] == 5).all()
    table = pq.read_table(tmp_path / "opposites.parquet")
    assert table.column("plw").null_count == len(rows)  # written as Parquet nulls, not NaN


def assert_refused_before_the_model_loads(result, message: str, out: Path, benchmark: str) -> None:
    assert result.returncode != 0
    assert message in result.stderr
    assert MODEL_LOADED not in result.stdout + result.stderr
    assert not list(out.glob(f"{benchmark}.*"))


def test_missing_model_directory_fails_before_lm_eval_loads(tmp_path):
    missing = tmp_path / "models" / "never-trained" / "model"
    result = run_evaluate(missing, "capitals", DEMO_CONFIG["benchmarks"]["capitals"], CELL, tmp_path)
    assert_refused_before_the_model_loads(result, f"benchmark capitals: model directory {missing} does not exist",
                                          tmp_path, "capitals")


def test_unknown_task_fails_with_suggestions_before_the_model_loads(tiny_model_dir, tmp_path):
    spec = {"task": "demo_capital", "num_fewshot": 0, "metric": "acc"}
    result = run_evaluate(tiny_model_dir, "capitals", spec, CELL, tmp_path)
    assert_refused_before_the_model_loads(
        result, "benchmark capitals: unknown lm-eval task 'demo_capital'; did you mean demo_capitals", tmp_path,
        "capitals")


@pytest.fixture
def ter_task_dir(tmp_path) -> Path:
    """A task directory with the demo translation task scored with TER (lower is better) beside BLEU."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "demo_numbers_ter.yaml").write_text(yaml.safe_dump({
        "include": str(REPO / "resources" / "lm_eval_tasks" / "demo_numbers_en_fr.yaml"), "task": "demo_numbers_ter",
        "metric_list": [{"metric": "bleu", "aggregation": "bleu", "higher_is_better": True},
                        {"metric": "ter", "aggregation": "ter", "higher_is_better": False}]}))
    return tasks


def run_check_metric(benchmark: str, task: str, metric: str, include_path: list[str], marker: Path):
    """scripts/check_metric.py as the check_metric rule calls it (offline, from the prefetched cache)."""
    command = [sys.executable, "scripts/check_metric.py", "--benchmark", benchmark, "--task", task, "--metric", metric,
               "--include-path", json.dumps(include_path), "--output", str(marker)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("task, metric, message", [
    ("demo_opposites", "acc_norm", "benchmark b: task demo_opposites reports no metric 'acc_norm'; it reports acc"),
    ("demo_numbers_ter", "ter", "benchmark b: metric 'ter' of task demo_numbers_ter is lower-is-better, but the "
                                "regression looks for the PLW that maximizes the primary metric; choose one of bleu"),
], ids=["not-reported", "lower-is-better"])
def test_check_metric_refuses_a_primary_metric_the_regression_cannot_use(ter_task_dir, tmp_path, task, metric,
                                                                          message):
    marker = tmp_path / "metric.json"
    result = run_check_metric("b", task, metric, [str(ter_task_dir), "resources/lm_eval_tasks"], marker)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and not marker.exists()


def test_check_metric_accepts_a_reported_higher_is_better_metric(ter_task_dir, tmp_path):
    marker = tmp_path / "metric.json"
    result = run_check_metric("b", "demo_numbers_ter", "bleu", [str(ter_task_dir), "resources/lm_eval_tasks"], marker)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(marker.read_text()) == {"benchmark": "b", "task": "demo_numbers_ter", "metric": "bleu"}


def run_prefetch(benchmarks: dict, include_path: list[str], marker: Path, models: dict | None = None):
    """scripts/prefetch.py as the prefetch rules call it, here offline."""
    command = [sys.executable, "scripts/prefetch.py", "--benchmarks", json.dumps(benchmarks),
               "--include-path", json.dumps(include_path), "--models", json.dumps(models or {}),
               "--output", str(marker)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_prefetch_of_local_tasks_needs_no_network(tmp_path):
    marker = tmp_path / "prefetch.json"
    result = run_prefetch(DEMO_CONFIG["benchmarks"], ["resources/lm_eval_tasks"], marker)
    assert result.returncode == 0, result.stderr[-3000:]
    fetched = json.loads(marker.read_text())
    assert fetched == {"models": [],
                       "tasks": [spec["task"] for spec in DEMO_CONFIG["benchmarks"].values()]}


def test_prefetch_of_a_model_the_hub_cannot_list_names_it_without_a_traceback(tmp_path):
    marker = tmp_path / "prefetch.json"
    result = run_prefetch({}, [], marker, models={"m": {"source": "some/dir"}})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert ("error: model m: source 'some/dir' is no local directory (write a relative one as ./some/dir) and "
            "could not be listed on the Hub") in result.stderr, result.stderr[-2000:]
    assert not marker.exists()
