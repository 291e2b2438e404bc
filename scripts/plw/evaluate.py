"""Score one model on one benchmark with lm-evaluation-harness and turn its results into tidy rows."""

import difflib
import math

import pandas as pd

ROW_COLUMNS = ["model", "dataset", "plw", "seed", "benchmark", "task", "metric", "value", "stderr",
               "num_fewshot", "n_samples", "lm_eval_version"]


class UnknownTaskError(ValueError):
    pass


def task_manager(include_path: list[str]):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path or None)


def check_task(manager, task: str, benchmark: str) -> None:
    """Refuse an unknown task name before any model loads, suggesting the closest known names."""
    if task not in manager.all_tasks:
        close = difflib.get_close_matches(task, manager.all_tasks, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownTaskError(f"benchmark {benchmark}: unknown lm-eval task {task!r}{hint}")


def evaluate(model_path: str, task: str, *, num_fewshot: int, manager, batch_size, limit: int | None = None,
             log_samples: bool = False, backend: str = "hf", bootstrap_iters: int = 1000,
             trust_remote_code: bool = False) -> dict:
    """lm-eval's full results dict for one task."""
    import torch
    from lm_eval import simple_evaluate

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if backend == "vllm":
        from lm_eval.models.vllm_causallms import VLLM

        model = VLLM(pretrained=model_path, batch_size=batch_size, trust_remote_code=trust_remote_code)
    else:
        from lm_eval.models.huggingface import HFLM

        model = HFLM(pretrained=model_path, batch_size=batch_size, device=device,
                     trust_remote_code=trust_remote_code)
    return simple_evaluate(model=model, tasks=[task], num_fewshot=num_fewshot, limit=limit,
                           task_manager=manager, log_samples=log_samples, bootstrap_iters=bootstrap_iters)


def result_rows(results: dict, task: str, cell: dict, benchmark: str) -> pd.DataFrame:
    """One row per metric that lm-eval reports for the task, with its standard error where it has one."""
    import lm_eval

    scores = results["results"][task]
    rows = []
    for key, value in scores.items():
        metric, _, filter_name = key.partition(",")
        if not filter_name or metric.endswith("_stderr") or not isinstance(value, int | float):
            continue
        stderr = scores.get(f"{metric}_stderr,{filter_name}")
        rows.append({
            **cell, "benchmark": benchmark, "task": task, "metric": metric, "value": float(value),
            "stderr": float(stderr) if isinstance(stderr, int | float) and not math.isnan(stderr) else None,
            "num_fewshot": int(results["n-shot"].get(task, 0) or 0),
            "n_samples": int(results["n-samples"][task]["effective"]),
            "lm_eval_version": lm_eval.__version__,
        })
    return pd.DataFrame(rows, columns=ROW_COLUMNS).astype(
        {"model": "string", "dataset": "string", "plw": "float64", "seed": "Int64", "benchmark": "string",
         "task": "string", "metric": "string", "value": "float64", "stderr": "float64", "num_fewshot": "int64",
         "n_samples": "int64", "lm_eval_version": "string"})
