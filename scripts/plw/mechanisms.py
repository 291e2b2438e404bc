"""Why PLW matters, per cell: how much the training loss varied, how far fine-tuning moved the weights, and how
much of its training completions the model reproduces (memorization).

Weights are compared tensor by tensor from the models' safetensors files, so a 7B pair needs no more memory than
one tensor of each. A tensor that fine-tuning grew (the embeddings and LM head gain rows for the [PAD] token that
Alpaca's recipe adds) is compared on the base model's rows only; the new rows have no base to move from.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from plw.analysis import analysis_scope


def loss_variability(log: pd.DataFrame) -> dict:
    """The relative standard deviation of the logged training loss (its sample SD over its mean), and its mean."""
    loss = log["loss"].astype("float64")
    return {"loss_mean": float(loss.mean()), "loss_rsd": float(loss.std(ddof=1) / loss.mean())}


def memorization_bleu(completions: list[str], references: list[str]) -> float:
    """Corpus BLEU (sacrebleu, 0-100) of greedy completions of training prompts against their training completions:
    100 for a model that repeats them word for word."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(completions, [references]).score)


def safetensors_files(model_dir: str | Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file that holds it (one file, or the shards that an index lists)."""
    from safetensors import safe_open  # here, not at import: the analysis environment has no torch

    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return {name: model_dir / file for name, file in json.loads(index.read_text())["weight_map"].items()}
    with safe_open(model_dir / "model.safetensors", "pt") as tensors:
        return dict.fromkeys(tensors.keys(), model_dir / "model.safetensors")


def _tensor(path: Path, name: str):
    import torch
    from safetensors import safe_open

    with safe_open(path, "pt") as tensors:
        return tensors.get_tensor(name).to(torch.float64)


def weight_distance(base_dir: str | Path, tuned_dir: str | Path, minkowski_p: float) -> dict:
    """L2 distance and Minkowski distance of order p between the two models' weights, over every tensor the base
    model has (a tensor missing from the fine-tuned model is an error), one tensor pair in memory at a time."""
    base, tuned = safetensors_files(base_dir), safetensors_files(tuned_dir)
    missing = sorted(set(base) - set(tuned))
    if missing:
        raise ValueError(f"{tuned_dir} lacks tensors of its base model {base_dir}: {', '.join(missing[:5])}")
    squares = powers = 0.0
    grown = []
    for name, path in base.items():
        before, after = _tensor(path, name), _tensor(tuned[name], name)
        if after.shape != before.shape:
            if after.shape[1:] != before.shape[1:] or after.shape[0] < before.shape[0]:
                raise ValueError(f"{name}: {tuple(after.shape)} in {tuned_dir}, {tuple(before.shape)} in its base")
            after = after[:before.shape[0]]
            grown.append(name)
        change = (after - before).abs()
        squares += float((change ** 2).sum())
        powers += float((change ** minkowski_p).sum())
    return {"weight_l2": float(np.sqrt(squares)), "weight_minkowski": powers ** (1 / minkowski_p),
            "minkowski_p": float(minkowski_p), "grown_tensors": ", ".join(grown)}


# the figure's panel labels (its caption, workflow/report/mechanisms.rst, says what each is)
MEASURES = {"loss_rsd": "loss RSD", "weight_l2": "weight L2", "weight_minkowski": "weight Minkowski",
            "memorization_bleu": "memorization BLEU"}


def mechanisms_markdown(table: pd.DataFrame) -> str:
    """The per-cell measures as Markdown, a row per cell."""
    p = table["minkowski_p"].iloc[0] if len(table) else float("nan")
    lines = ["# Why PLW matters: training-loss variability, weight distance and memorization per cell\n",
             "Loss RSD: the sample standard deviation of the logged training loss over its mean. Weight distances: "
             f"between the fine-tuned and the base model's weights, L2 and Minkowski of order p = {p:g}; tensors that "
             "fine-tuning grew (the [PAD] row) are compared on the base model's rows.\n",
             "Memorization: corpus BLEU (0-100) of the model's greedy completions of its first training prompts "
             "against their training completions.\n",
             "| model | dataset | plw | seed | loss mean | loss RSD | weight L2 | weight Minkowski | memorization BLEU "
             "(prompts) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {row.model} | {row.scope} | {row.plw:g} | {row.seed} | {row.loss_mean:.4f} | {row.loss_rsd:.4f} | "
              f"{row.weight_l2:.4g} | {row.weight_minkowski:.4g} | {row.memorization_bleu:.2f} "
              f"({row.memorization_prompts}) |" for row in table.assign(scope=analysis_scope(table)).itertuples()]
    return "\n".join(lines) + "\n"
