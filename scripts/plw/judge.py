"""Judged long generation: a local judge model's pairwise verdicts between a cell's completion and the benchmark's
reference output, and the win rate, with the alpaca-eval package's annotator prompt, its order randomization,
its preference encoding and its win-rate estimator.

Preferences follow alpaca-eval: 1 = the reference is better, 2 = the cell's completion is better, 1.5 = a tie.
The judge shows the two outputs in an order drawn per item (alpaca-eval's seeded choice, seeded by the item's
instruction and input, as its is_randomize_output_order seeds by the instruction), so a judge's position bias does
not favour either side.

A verdict is the judge's most likely answer among the format's verdict words: each word's likelihood as the
continuation of the judge's prompt (with and without a leading space, added up), as lm-evaluation-harness scores
multiple choice. A verdict therefore always parses; the log-likelihoods are kept beside it. For AlpacaEval's
classifier prompt this is alpaca-eval's logprob_parser, binarized (equal likelihoods included).
"""

import importlib.util
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

# alpaca-eval 0.6.6 imports pkg_resources (hence setuptools < 81), whose deprecation warning is not ours to act on
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

# PandaLM-7B's own prompts, with and without an input (WeOpenML/PandaLM, pandalm/utils/pandalm_inference.py,
# build_pandalm_prompt); its answer begins with the verdict.
PANDALM_RESPONSES = "### Response 1:\n{output_1}\n\n### Response 2:\n{output_2}\n\n### Evaluation:\n"
PANDALM_TEMPLATES = {
    True: "Below are two responses for a given task. The task is defined by the Instruction with an Input that "
          "provides further context. Evaluate the responses and generate a reference answer for the task.\n\n"
          "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n" + PANDALM_RESPONSES,
    False: "Below are two responses for a given task. The task is defined by the Instruction. Evaluate the responses "
           "and generate a reference answer for the task.\n\n### Instruction:\n{instruction}\n\n" + PANDALM_RESPONSES,
}
PLACEHOLDER = re.compile(r"\{(instruction|input|output_1|output_2)\}")

# format -> (where its template comes from, {verdict word: preference of output_1 vs output_2})
JUDGE_FORMATS = {
    # AlpacaEval's classifier annotator (alpaca_eval_clf_gpt4_turbo): the judge answers m (output_1) or M (output_2)
    "alpaca_eval_clf": ("alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt", {"m": 1.0, "M": 2.0}),
    "pandalm": (None, {"1": 1.0, "2": 2.0, "Tie": 1.5}),
}


def judge_template(judge_format: str, with_input: bool) -> str:
    """The format's prompt template for an item with or without an input: {instruction}, {input} (PandaLM's, with
    one), {output_1} and {output_2}."""
    file, _ = JUDGE_FORMATS[judge_format]
    if file is None:
        return PANDALM_TEMPLATES[with_input]
    # read from the installed alpaca-eval package, without importing it (its import pulls the API clients)
    package = Path(importlib.util.find_spec("alpaca_eval").submodule_search_locations[0])
    return (package / "evaluators_configs" / file).read_text(encoding="utf-8")


def fill_template(template: str, **fields: str) -> str:
    """The placeholders replaced in one pass (str.format would choke on the templates' literal braces, and text
    put in must not be searched for placeholders again)."""
    return PLACEHOLDER.sub(lambda match: fields[match.group(1)], template)


def is_swapped(instruction: str) -> bool:
    """Whether the reference is shown second: alpaca-eval's seeded choice, seeded by the item's text."""
    from alpaca_eval.utils import random_seeded_choice

    return random_seeded_choice(seed=instruction, choices=[False, True])


def judge_prompts(items: pd.DataFrame, judge_format: str) -> pd.DataFrame:
    """items (instruction, input, reference, output) -> the same with `swapped` and the judge's `prompt` text
    (alpaca-eval's chat markup <|im_start|>role ... <|im_end|> for its formats)."""
    rows = []
    for item in items.itertuples(index=False):
        template = judge_template(judge_format, with_input=bool(item.input))
        swapped = is_swapped(item.instruction + item.input)
        # stripped, as PandaLM's prompt builder does (the cells' answers already are)
        reference, output = item.reference.strip(), item.output.strip()
        first, second = (output, reference) if swapped else (reference, output)
        # AlpacaEval's instructions carry their input inside; Alpaca-format records keep it apart
        keeps_input_apart = "{input}" in template or not item.input
        instruction = item.instruction if keeps_input_apart else f"{item.instruction}\n\n{item.input}"
        rows.append({"swapped": swapped, "prompt": fill_template(template, instruction=instruction,
                                                                   input=item.input, output_1=first,
                                                                   output_2=second)})
    return items.reset_index(drop=True).join(pd.DataFrame(rows, index=range(len(rows))))


def chat_text(tokenizer, prompt: str) -> tuple[str, bool]:
    """A prompt as the judge reads it, and whether it already holds the special tokens: alpaca-eval's chat markup
    through the judge's chat template (its system message folded into the user's where the template has no system
    role, as Mixtral's), or the bare messages where the judge has no template; other prompts as they are."""
    if not prompt.lstrip().startswith("<|im_start|>"):
        return prompt, False
    from alpaca_eval.utils import prompt_to_chatml

    messages = [{"role": m["role"], "content": m["content"]} for m in prompt_to_chatml(prompt)]
    if tokenizer.chat_template is None:
        return "\n\n".join(message["content"] for message in messages) + "\n\n", False
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
    except Exception:  # noqa: BLE001  (jinja's TemplateError: "roles must alternate")
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        rest = [m for m in messages if m["role"] != "system"]
        rest[0] = {**rest[0], "content": f"{system}\n\n{rest[0]['content']}"}
        return tokenizer.apply_chat_template(rest, tokenize=False, add_generation_prompt=True), True


def continuation_logprobs(model, tokenizer, context: str, continuations: list[str], has_special_tokens: bool):
    """The log-likelihood of each continuation after the context, in one batch (right padding)."""
    import torch

    context_ids = tokenizer(context, add_special_tokens=not has_special_tokens)["input_ids"]
    sequences = []
    for continuation in continuations:
        whole = tokenizer(context + continuation, add_special_tokens=not has_special_tokens)["input_ids"]
        # the continuation's tokens as they tokenize after the context (lm-eval's split)
        split = len(context_ids) if whole[:len(context_ids)] == context_ids else None
        ids = whole if split else context_ids + tokenizer(continuation, add_special_tokens=False)["input_ids"]
        sequences.append((ids, split or len(context_ids)))
    width = max(len(ids) for ids, _ in sequences)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in sequences])
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in sequences])
    first = min(start for _, start in sequences) - 1  # the positions that predict a continuation's tokens
    with torch.no_grad():
        logits = model(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device)).logits
    logprobs = torch.log_softmax(logits[:, first:].float(), dim=-1).cpu()
    return [float(sum(logprobs[row, position - 1 - first, ids[position]] for position in range(start, len(ids))))
            for row, (ids, start) in enumerate(sequences)]


def verdict_logprobs(model, tokenizer, prompt: str, judge_format: str) -> dict[str, float]:
    """Each verdict word's log-likelihood as the judge's answer: with and without a leading space, combined."""
    context, has_special_tokens = chat_text(tokenizer, prompt)
    words = list(JUDGE_FORMATS[judge_format][1])
    variants = [variant for word in words for variant in (word, " " + word)]
    scores = np.array(continuation_logprobs(model, tokenizer, context, variants, has_special_tokens))
    return {word: float(np.logaddexp(*scores[2 * i:2 * i + 2])) for i, word in enumerate(words)}


def preference(logprobs: dict[str, float], judge_format: str, swapped: bool) -> float:
    """The verdict (the most likely verdict word; on equal likelihoods the later one, as alpaca-eval's binarized
    logprob_parser decides for the second output) as alpaca-eval's preference of the cell's completion over the
    reference."""
    verdicts = JUDGE_FORMATS[judge_format][1]
    shown = verdicts[max(reversed(verdicts), key=lambda word: logprobs[word])]  # 1: first shown wins, 2: second
    return 3.0 - shown if swapped else shown


def win_rate(preferences) -> dict:
    """alpaca-eval's win rate of the cell over the reference (a tie counts a half) and its standard error, as
    fractions; with the counts of wins, losses and ties."""
    from alpaca_eval.metrics import pairwise_to_winrate

    result = pairwise_to_winrate(list(preferences))
    return {"win_rate": float(result["win_rate"]) / 100, "win_rate_stderr": float(result["standard_error"]) / 100,
            "n_wins": int(result["n_wins"]), "n_losses": int(result["n_wins_base"]),
            "n_draws": int(result["n_draws"]), "n_total": int(result["n_total"])}
