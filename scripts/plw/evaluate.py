"""Score one model on one benchmark with lm-evaluation-harness and turn its results into tidy rows.

Order of work in a job: cheap checks (model directory, task name) first, then the model loads. The primary
metric is checked once per benchmark, by check_metric (scripts/check_metric.py).
"""

import difflib
import functools
import importlib.util
import math
from pathlib import Path

import pandas as pd

ROW_COLUMNS = ["model", "dataset", "completion_weight", "plw", "seed", "benchmark", "task", "metric", "value",
               "stderr", "num_fewshot", "n_samples", "lm_eval_version", "gpus", "code_commit", "code_modified"]
ROW_TYPES = {"model": "string", "dataset": "string", "completion_weight": "float64", "plw": "float64", "seed": "Int64",
             "benchmark": "string", "task": "string", "metric": "string", "value": "float64", "stderr": "float64",
             "num_fewshot": "int64", "n_samples": "int64", "lm_eval_version": "string", "gpus": "int64",
             "code_commit": "string", "code_modified": "boolean"}


class UnknownTaskError(ValueError):
    pass


class PrimaryMetricError(ValueError):
    """A benchmark's configured metric that the task does not report, or one where lower is better."""


def check_model_dir(path: str | Path, benchmark: str) -> None:
    """A local model must be a directory written by save_pretrained."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"benchmark {benchmark}: model directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"benchmark {benchmark}: {path} is no saved model (no config.json in it)")


def check_backend(backend: str) -> None:
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ModuleNotFoundError("evaluation.backend is vllm, but vllm is not installed here; "
                                  "install it or set evaluation.backend: hf")


def task_manager(include_path: list[str], task: str | None = None):
    """The task index. Indexing lm-eval's ~15k built-in tasks costs 7-11 s, so when `task` is one of the
    local tasks (include_path), only those are indexed (a few ms). Each index is built once per process."""
    include_path = tuple(str(path) for path in include_path or [])
    if task is not None and include_path:
        local = _task_index(include_path, local_only=True)
        if task in local.all_tasks:
            return local
    return _task_index(include_path, local_only=False)


@functools.cache
def _task_index(include_path: tuple[str, ...], local_only: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=not local_only, include_path=list(include_path) or None)


def check_task(manager, task: str, benchmark: str) -> None:
    """Refuse an unknown task name before any model loads, suggesting the closest known names."""
    if task not in manager.all_tasks:
        close = difflib.get_close_matches(task, manager.all_tasks, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownTaskError(f"benchmark {benchmark}: unknown lm-eval task {task!r}{hint}")


def load_task(manager, task: str, benchmark: str):
    """The one lm-eval Task of a benchmark, with its data loaded (from the cache when offline)."""
    check_task(manager, task, benchmark)
    tasks = manager.load([task])["tasks"]
    if list(tasks) != [task]:
        raise ValueError(f"benchmark {benchmark}: {task!r} is a group or tag of {len(tasks)} tasks "
                         f"({', '.join(sorted(tasks))}); a benchmark names one task")
    return tasks[task]


def check_metric(task_object, metric: str, benchmark: str) -> None:
    """The configured primary metric must be one the task reports, and higher must be better: the regression
    looks for the PLW that maximizes it (checked before the model loads)."""
    reported = sorted(task_object.aggregation())
    if metric not in reported:
        raise PrimaryMetricError(f"benchmark {benchmark}: task {task_object.config.task} reports no metric "
                                 f"{metric!r}; it reports {', '.join(reported)}")
    higher_is_better = task_object.higher_is_better()
    if not higher_is_better.get(metric, True):
        better = [name for name in reported if higher_is_better.get(name, True)]
        raise PrimaryMetricError(f"benchmark {benchmark}: metric {metric!r} of task {task_object.config.task} is "
                                 "lower-is-better, but the regression looks for the PLW that maximizes the primary "
                                 f"metric; choose one of {', '.join(better) or 'none: the task has no other'}")


def load_model(model_path: str, *, backend: str = "hf", batch_size="auto", revision: str | None = None,
               trust_remote_code: bool = False):
    """lm-eval's wrapper of the model: HFLM (transformers) or VLLM."""
    if backend == "vllm":
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(pretrained=model_path, batch_size=batch_size, revision=revision,
                    trust_remote_code=trust_remote_code)
    import torch
    from lm_eval.models.huggingface import HFLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return HFLM(pretrained=model_path, batch_size=batch_size, device=device, revision=revision or "main",
                trust_remote_code=trust_remote_code)


def evaluate(model, task_object, *, num_fewshot: int, manager, limit: int | None = None,
             log_samples: bool = False, bootstrap_iters: int = 1000) -> dict:
    """lm-eval's full results dict for one task."""
    from lm_eval import simple_evaluate

    return simple_evaluate(model=model, tasks=[task_object], num_fewshot=num_fewshot, limit=limit,
                           task_manager=manager, log_samples=log_samples, bootstrap_iters=bootstrap_iters)


def result_rows(results: dict, task: str, cell: dict, benchmark: str) -> pd.DataFrame:
    """One row per metric that lm-eval reports for the task, with its standard error where it has one, the GPUs
    that scored it (for the cost table) and the code that made it (plw.provenance).

    Scores sit at results["results"][task]["<metric>,<filter>"]; a metric under a filter other than
    "none" is named "<metric>_<filter>".
    """
    import lm_eval
    import torch

    from plw.provenance import code_version

    code = code_version()
    scores = results["results"][task]
    rows = []
    for key, value in scores.items():
        metric, _, filter_name = key.partition(",")
        if not filter_name or metric.endswith("_stderr") or not isinstance(value, int | float):
            continue
        stderr = scores.get(f"{metric}_stderr,{filter_name}")
        rows.append({
            **cell, "benchmark": benchmark, "task": task,
            "metric": metric if filter_name == "none" else f"{metric}_{filter_name}", "value": float(value),
            "stderr": float(stderr) if isinstance(stderr, int | float) and not math.isnan(stderr) else None,
            "num_fewshot": int(results["n-shot"].get(task, 0) or 0),
            "n_samples": int(results["n-samples"][task]["effective"]),
            "lm_eval_version": lm_eval.__version__, "gpus": int(torch.cuda.is_available()), **code,
        })
    return pd.DataFrame(rows, columns=ROW_COLUMNS).astype(ROW_TYPES)
