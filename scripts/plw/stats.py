"""The paper's Table 1: token statistics of a dataset in a model's tokenizer."""

from collections.abc import Callable

import numpy as np
import pandas as pd

from plw.records import is_empty_completion

FIELDS = ("instruction", "input", "output")


def token_counts(records: pd.DataFrame, count_tokens: Callable[[list[str]], list[int]]) -> pd.DataFrame:
    """Tokens (fields tokenized alone, no special tokens) and characters per field of every record, and whether
    its completion is empty (a valid record: Alpaca trains it on the EOS token alone)."""
    counts = pd.DataFrame({field: count_tokens(records[field].tolist()) for field in FIELDS})
    for field in FIELDS:
        counts[f"{field}_characters"] = records[field].str.len().to_numpy()
    counts["empty_completion"] = is_empty_completion(records["output"]).to_numpy()
    return counts


def dataset_stats(counts: pd.DataFrame) -> dict:
    """Mean and sample standard deviation per field, total tokens, and total completion / total prompt tokens;
    the same ratio in characters, the definition that matches the paper's printed AlpacaData ratio (docs/table1.md)."""
    stats = {"records": len(counts), "empty_completions": int(counts["empty_completion"].sum())}
    for field, name in zip(FIELDS, ("instruction", "input", "completion")):
        stats[f"{name}_mean"] = float(counts[field].mean())
        stats[f"{name}_sd"] = float(counts[field].std(ddof=1)) if len(counts) > 1 else np.nan
    prompt = int(counts["instruction"].sum() + counts["input"].sum())
    completion = int(counts["output"].sum())
    stats["total_tokens"] = prompt + completion
    stats["completion_prompt_ratio"] = completion / prompt
    stats["completion_prompt_character_ratio"] = (
        counts["output_characters"].sum() / (counts["instruction_characters"].sum() + counts["input_characters"].sum()))
    return stats


def to_markdown(table: pd.DataFrame) -> str:
    """Table 1 as Markdown, as the paper prints it: mean (standard deviation) per field, to two decimals."""
    lines = ["# Token statistics per dataset (Table 1)\n",
             "Tokens per record in the model's tokenizer, each field tokenized alone without special tokens: mean "
             "(sample standard deviation). Completion/prompt is the ratio of all completion tokens to all "
             "instruction and input tokens, and the same in characters (the paper's AlpacaData ratio, 3.27, matches "
             "the character ratio, 3.269, not the token ratio, 3.284: docs/table1.md). Empty completions are valid "
             "records (Alpaca trains them on the EOS token alone) and are counted in every column.\n",
             "| model | dataset | records | empty completions | instruction | input | completion | total tokens | "
             "completion/prompt (tokens) | completion/prompt (characters) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in table.itertuples():
        cells = [f"{getattr(row, f + '_mean'):.2f} ({getattr(row, f + '_sd'):.2f})"
                 for f in ("instruction", "input", "completion")]
        lines.append(f"| {row.model} | {row.dataset} | {row.records:,} | {row.empty_completions:,} | "
                     f"{' | '.join(cells)} | {row.total_tokens:,} | {row.completion_prompt_ratio:.3f} | "
                     f"{row.completion_prompt_character_ratio:.3f} |")
    return "\n".join(lines) + "\n"
