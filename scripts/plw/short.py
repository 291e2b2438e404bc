"""The AlpacaDataShort derivation: where the completion is longer than the prompt, swap them."""

from collections.abc import Callable

import pandas as pd

NO_INPUT_INSTRUCTION = "Predict the prompt that generated the following AI output."
WITH_INPUT_INSTRUCTION = ("Predict the prompt that generated the below AI output given the following context. "
                          "Context: {input}")


def derive_short(records: pd.DataFrame, count_tokens: Callable[[list[str]], list[int]]) -> pd.DataFrame:
    """Swap each record whose completion has more tokens than its prompt (instruction plus input).

    The new instruction asks to predict the prompt (with the original input as context when there is one),
    the new input is the original completion, the new completion the original instruction. `count_tokens`
    maps texts to token counts in the model's tokenizer.
    """
    prompt_tokens = pd.Series(count_tokens(records["instruction"].tolist()), index=records.index) + \
        pd.Series(count_tokens(records["input"].tolist()), index=records.index)
    completion_tokens = pd.Series(count_tokens(records["output"].tolist()), index=records.index)
    swap = completion_tokens > prompt_tokens
    derived = records.copy()
    has_input = records["input"] != ""
    derived.loc[swap & ~has_input, "instruction"] = NO_INPUT_INSTRUCTION
    derived.loc[swap & has_input, "instruction"] = [
        WITH_INPUT_INSTRUCTION.format(input=text) for text in records.loc[swap & has_input, "input"]]
    derived.loc[swap, "input"] = records.loc[swap, "output"]
    derived.loc[swap, "output"] = records.loc[swap, "instruction"]
    return derived
