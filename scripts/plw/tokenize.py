"""Stanford Alpaca's preprocessing, with a loss weight per token: prompt `plw`, completion (EOS included) 1."""

import torch

from plw.prompts import render_prompt

DEFAULT_PAD_TOKEN = "[PAD]"


def add_pad_token(tokenizer, model) -> None:
    """Alpaca's smart_tokenizer_and_embedding_resize: add [PAD] and give it the mean of the other embeddings."""
    if tokenizer.pad_token is not None:
        return
    tokenizer.add_special_tokens({"pad_token": DEFAULT_PAD_TOKEN})
    old_size = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        for embeddings in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            embeddings[old_size:] = embeddings[:old_size].mean(dim=0, keepdim=True)


def tokenize_record(record: dict, tokenizer, plw: float, max_length: int) -> dict:
    """input_ids of prompt + output + EOS (BOS from the tokenizer, right truncation) and per-token weights."""
    prompt = render_prompt(record["instruction"], record["input"])
    target = f"{record['output']}{tokenizer.eos_token}"
    input_ids = tokenizer(prompt + target, max_length=max_length, truncation=True)["input_ids"]
    prompt_length = len(tokenizer(prompt, max_length=max_length, truncation=True)["input_ids"])
    weights = [plw] * prompt_length + [1.0] * (len(input_ids) - prompt_length)
    return {"input_ids": input_ids, "loss_weights": weights[:len(input_ids)]}
