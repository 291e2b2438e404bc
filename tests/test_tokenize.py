"""Alpaca's preprocessing: its prompts and per-token weights, the special tokens a tokenizer lacks added as Alpaca
adds them, and a prompt without the BOS token that the model's config names reported."""

import torch
from transformers import AutoModelForCausalLM

from plw.prompts import render_prompt
from plw.tokenize import add_missing_special_tokens, load_tokenizer, missing_bos_note, tokenize_record
from training_helpers import IGNORE_INDEX, alpaca_labels

RECORD = {"instruction": "Name a colour.", "input": "", "output": "Red."}


def test_a_tokenizer_without_eos_gets_alpacas_eos_token_and_records_end_with_it(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir), eos_token=None)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert tokenizer.eos_token is None
    old_embeddings = model.get_input_embeddings().weight.detach().clone()

    added = add_missing_special_tokens(tokenizer, model)

    assert added == ["pad_token", "eos_token"]
    assert tokenizer.eos_token == "</s>"
    example = tokenize_record(RECORD, tokenizer, plw=0.5, max_length=64)
    assert example["input_ids"][-1] == tokenizer.eos_token_id
    assert "None" not in tokenizer.decode(example["input_ids"])
    # "</s>" is in this vocabulary already (as in LLaMA's): it keeps its id and embedding; [PAD] is new and gets
    # the mean of the old embeddings (Alpaca's smart_tokenizer_and_embedding_resize)
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == len(tokenizer) == old_embeddings.shape[0] + 1
    assert tokenizer.eos_token_id == model.config.eos_token_id
    torch.testing.assert_close(embeddings[tokenizer.eos_token_id], old_embeddings[tokenizer.eos_token_id])
    torch.testing.assert_close(embeddings[tokenizer.pad_token_id], old_embeddings.mean(dim=0))


def test_an_empty_completion_trains_on_the_eos_token_alone(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    example = tokenize_record({**RECORD, "output": ""}, tokenizer, plw=0.1, max_length=64)
    assert example["input_ids"][-1] == tokenizer.eos_token_id
    assert example["loss_weights"][-1] == 1.0 and set(example["loss_weights"][:-1]) == {0.1}


def test_a_prompt_without_the_configs_bos_token_is_reported(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    bos = model.config.bos_token_id
    assert missing_bos_note(load_tokenizer(str(tiny_model_dir)), bos) is None

    note = missing_bos_note(load_tokenizer(str(tiny_model_dir), add_bos_token=False), bos)

    assert note is not None and f"BOS token id {bos}" in note and "without BOS" in note
    assert missing_bos_note(load_tokenizer(str(tiny_model_dir), add_bos_token=False), None) is None


def test_rendered_prompt_and_weights_equal_alpacas(model_and_tokenizer, demo_records):
    _, tokenizer = model_and_tokenizer
    with_input = next(r for r in demo_records if r["input"])
    without_input = next(r for r in demo_records if not r["input"])
    assert render_prompt(with_input["instruction"], with_input["input"]) == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        f"### Instruction:\n{with_input['instruction']}\n\n### Input:\n{with_input['input']}\n\n### Response:")
    assert render_prompt(without_input["instruction"]) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        f"request.\n\n### Instruction:\n{without_input['instruction']}\n\n### Response:")
    for record in (with_input, without_input):
        tokenized = tokenize_record(record, tokenizer, plw=0.25, max_length=128)
        input_ids, labels = alpaca_labels(record, tokenizer)
        assert tokenized["input_ids"] == input_ids
        assert input_ids[0] == tokenizer.bos_token_id and input_ids[-1] == tokenizer.eos_token_id
        assert tokenized["loss_weights"] == [0.25 if label == IGNORE_INDEX else 1.0 for label in labels]


def test_pad_token_is_added_with_the_mean_embedding(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    embeddings = model.get_input_embeddings().weight
    assert tokenizer.pad_token == "[PAD]" and tokenizer.pad_token_id == embeddings.shape[0] - 1
    torch.testing.assert_close(embeddings[-1], embeddings[:-1].mean(dim=0))
