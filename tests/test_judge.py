"""Judged long generation: prompts in alpaca-eval's format, verdicts from the judge's likelihoods, the win rate."""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from plw.download import git_blob_id
from plw.judge import (
    JUDGE_FORMATS,
    chat_text,
    continuation_logprobs,
    judge_prompts,
    preference,
    verdict_logprobs,
    win_rate,
)


def items(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({"instruction": [f"Write about animal number {i}." for i in range(n)], "input": [""] * n,
                         "reference": [f"reference {i}" for i in range(n)],
                         "output": [f"answer {i}" for i in range(n)]})


def test_the_win_rate_of_a_hand_made_case_counts_a_tie_as_half():
    # the cell wins twice, loses once, ties once (alpaca-eval's preferences: 2 win, 1 loss, 1.5 tie)
    result = win_rate([2.0, 2.0, 1.0, 1.5])
    wins = np.array([1, 1, 0, 0.5])
    assert result["win_rate"] == pytest.approx(0.625)
    assert result["win_rate_stderr"] == pytest.approx(wins.std(ddof=1) / math.sqrt(4))  # 0.2394
    assert (result["n_wins"], result["n_losses"], result["n_draws"], result["n_total"]) == (2, 1, 1, 4)


@pytest.mark.parametrize("judge_format", list(JUDGE_FORMATS))
def test_a_verdict_names_the_output_the_judge_prefers_whichever_side_shows_it(judge_format):
    words = list(JUDGE_FORMATS[judge_format][1])  # first-shown wins, second-shown wins[, tie]
    first_wins = {word: -5.0 for word in words} | {words[0]: -0.1}
    second_wins = {word: -5.0 for word in words} | {words[1]: -0.1}
    # shown in order (reference first): the first-shown is the reference
    assert preference(first_wins, judge_format, swapped=False) == 1.0
    assert preference(second_wins, judge_format, swapped=False) == 2.0
    # swapped (the cell's answer first): the same verdicts mean the opposite
    assert preference(first_wins, judge_format, swapped=True) == 2.0
    assert preference(second_wins, judge_format, swapped=True) == 1.0
    if judge_format == "pandalm":
        tie = {"1": -3.0, "2": -3.0, "Tie": -0.2}
        assert preference(tie, judge_format, swapped=False) == preference(tie, judge_format, swapped=True) == 1.5


def test_verdicts_agree_with_alpaca_evals_binarized_logprob_parser():
    from alpaca_eval.completion_parsers import logprob_parser

    rng = np.random.default_rng(0)
    for values in [[-1.0, -1.0], *rng.normal(size=(50, 2)).tolist()]:  # equal likelihoods first
        logprobs = dict(zip(["m", "M"], values))
        completion = {"logprobs": {"content": [{"top_logprobs": [{"token": token, "logprob": value}
                                                                  for token, value in logprobs.items()]}]}}
        expected = logprob_parser(completion, numerator_token="m", denominator_tokens=["m", "M"], is_binarize=True)
        assert preference(logprobs, "alpaca_eval_clf", swapped=False) == expected[0]


def test_alpaca_eval_prompts_show_both_outputs_in_a_seeded_order():
    prompts = judge_prompts(items(40), "alpaca_eval_clf")
    assert prompts["swapped"].nunique() == 2, "the order is drawn per instruction"
    assert prompts.equals(judge_prompts(items(40), "alpaca_eval_clf")), "and the same on every run"
    for row in prompts.itertuples():
        first, second = (row.output, row.reference) if row.swapped else (row.reference, row.output)
        assert row.prompt.index(f'"""{first}"""') < row.prompt.index(f'"""{second}"""')
        assert row.prompt.startswith("<|im_start|>system") and '"model_identifier": "M"' in row.prompt
        assert f'"""{row.instruction}"""' in row.prompt


def test_pandalm_prompts_are_pandalms_own_with_and_without_input_and_alpaca_eval_prompts_append_the_input():
    with_input = items(1).assign(input=["the context"], reference=["  padded reference \n"])
    pandalm = judge_prompts(with_input, "pandalm")["prompt"][0]
    assert "Instruction with an Input that provides further context." in pandalm
    assert "### Input:\nthe context\n\n### Response 1:\n" in pandalm and pandalm.endswith("### Evaluation:\n")
    assert "\npadded reference\n\n" in pandalm, "responses are stripped, as PandaLM's prompt builder does"
    without_input = judge_prompts(items(1), "pandalm")["prompt"][0]
    assert without_input.startswith("Below are two responses for a given task. The task is defined by the "
                                    "Instruction. Evaluate the responses") and "### Input:" not in without_input
    alpaca_eval = judge_prompts(with_input, "alpaca_eval_clf")["prompt"][0]
    assert f'"""{with_input.instruction[0]}\n\nthe context"""' in alpaca_eval


def test_text_put_into_a_prompt_is_not_searched_for_placeholders_again():
    tricky = items(1).assign(instruction=["Print {output_2} and {input} literally."])
    for judge_format in JUDGE_FORMATS:
        prompt = judge_prompts(tricky, judge_format)["prompt"][0]
        assert "Print {output_2} and {input} literally." in prompt


class Tokenizer:
    """Just enough of a tokenizer for chat_text: a Jinja-like template that may refuse a system role."""

    def __init__(self, template, system_role: bool):
        self.chat_template, self.system_role = template, system_role

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        if not self.system_role and messages[0]["role"] == "system":
            raise ValueError("Conversation roles must alternate user/assistant/user/assistant/...")
        return "".join(f"[{m['role']}] {m['content']} " for m in messages) + "[assistant]"


def test_chat_markup_goes_through_the_judges_template_folding_the_system_message_where_it_has_no_system_role():
    prompt = judge_prompts(items(1), "alpaca_eval_clf")["prompt"][0]
    with_system, special = chat_text(Tokenizer("{{ template }}", system_role=True), prompt)
    assert special and with_system.startswith("[system] You are a highly efficient assistant")
    folded, _ = chat_text(Tokenizer("{{ template }}", system_role=False), prompt)
    assert folded.startswith("[user] You are a highly efficient assistant") and folded.count("[user]") == 1
    plain, special = chat_text(Tokenizer(None, system_role=True), prompt)
    assert not special and "<|im_start|>" not in plain and "I require a leaderboard" in plain
    pandalm = judge_prompts(items(1), "pandalm")["prompt"][0]
    assert chat_text(Tokenizer("{{ template }}", system_role=True), pandalm) == (pandalm, False)


def test_a_continuations_log_likelihood_is_the_sum_of_the_models_token_log_probabilities(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    context, continuations = "Give the opposite of the word.", [" hot", " cold and wet"]
    scores = continuation_logprobs(model, tokenizer, context, continuations, has_special_tokens=False)
    for continuation, score in zip(continuations, scores):
        context_ids = tokenizer(context)["input_ids"]
        ids = tokenizer(context + continuation)["input_ids"]
        assert ids[:len(context_ids)] == context_ids
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
        expected = sum(logprobs[position - 1, ids[position]].item() for position in range(len(context_ids), len(ids)))
        assert score == pytest.approx(expected, abs=1e-4)


def test_a_real_judge_gives_every_item_a_verdict(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = judge_prompts(items(4), "alpaca_eval_clf")
    preferences = []
    for row in prompts.itertuples():
        logprobs = verdict_logprobs(model, tokenizer, row.prompt, "alpaca_eval_clf")
        assert set(logprobs) == {"m", "M"} and all(value < 0 for value in logprobs.values())
        preferences.append(preference(logprobs, "alpaca_eval_clf", row.swapped))
    assert set(preferences) <= {1.0, 2.0}
    assert win_rate(preferences)["n_total"] == 4


@pytest.mark.slow
def test_a_judged_benchmark_is_downloaded_verified_and_normalized_with_its_bad_records_counted(tmp_path, repo):
    pairs = [{"idx": 7, "instruction": "Say hello.", "input": "", "response1": "Hello."},
             {"idx": 8, "instruction": "Verify the statement.", "input": "2 is even.", "response1": True}]
    content = json.dumps(pairs).encode()
    (tmp_path / "pairs.json").write_bytes(content)
    spec = {"url": (tmp_path / "pairs.json").as_uri(), "git_blob": git_blob_id(content),
            "columns": {"id": "idx", "output": "response1"}, "bad_records": "drop"}

    def prefetch(spec: dict, output: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(repo / "scripts" / "prefetch_judged_benchmark.py"), "--name",
                               "pairs", "--spec", json.dumps(spec), "--output", str(tmp_path / output)],
                              capture_output=True, text=True, timeout=120)

    result = prefetch(spec, "pairs.parquet")
    assert result.returncode == 0, result.stderr
    assert "dropped 1 records: non-string output" in result.stdout
    table = pd.read_parquet(tmp_path / "pairs.parquet")
    assert table.to_dict("records") == [{"id": "7", "instruction": "Say hello.", "input": "", "output": "Hello."}]

    kept = prefetch({**spec, "bad_records": "error", "git_blob": git_blob_id(content)}, "strict.parquet")
    assert kept.returncode != 0 and "record 1: non-string output" in kept.stderr
    assert "set `judged_benchmarks.pairs.data.bad_records: drop`" in kept.stderr

    moved = prefetch({**spec, "git_blob": "0" * 40}, "moved.parquet")
    assert moved.returncode != 0 and "does not match the configured git_blob" in moved.stderr
    assert not (tmp_path / "moved.parquet").exists()
