"""The paper's Table 1: token statistics of a dataset in a model's tokenizer."""

from collections.abc import Callable

import numpy as np
import pandas as pd


def token_counts(records: pd.DataFrame, count_tokens: Callable[[list[str]], list[int]]) -> pd.DataFrame:
    return pd.DataFrame({field: count_tokens(records[field].tolist())
                         for field in ("instruction", "input", "output")})


def dataset_stats(counts: pd.DataFrame) -> dict:
    """Mean and sample standard deviation per field, total tokens, and total completion / total prompt tokens."""
    stats = {"records": len(counts)}
    for field, name in (("instruction", "instruction"), ("input", "input"), ("output", "completion")):
        stats[f"{name}_mean"] = float(counts[field].mean())
        stats[f"{name}_sd"] = float(counts[field].std(ddof=1)) if len(counts) > 1 else np.nan
    prompt = int(counts["instruction"].sum() + counts["input"].sum())
    completion = int(counts["output"].sum())
    stats["total_tokens"] = prompt + completion
    stats["completion_prompt_ratio"] = completion / prompt
    return stats


def to_markdown(table: pd.DataFrame) -> str:
    """Table 1 as Markdown: mean ± sd per field."""
    lines = ["# Token statistics per dataset (Table 1)\n",
             "Tokens per record in the model's tokenizer, mean ± standard deviation; completion/prompt is the ratio "
             "of all completion tokens to all instruction and input tokens.\n",
             "| model | dataset | records | instruction | input | completion | total tokens | completion/prompt |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in table.itertuples():
        cells = [f"{getattr(row, f + '_mean'):.1f} ± {getattr(row, f + '_sd'):.1f}"
                 for f in ("instruction", "input", "completion")]
        lines.append(f"| {row.model} | {row.dataset} | {row.records} | {' | '.join(cells)} | "
                     f"{row.total_tokens:,} | {row.completion_prompt_ratio:.3f} |")
    return "\n".join(lines) + "\n"
