"""Tokenizers: loaded from a Hub id or a local directory with the config's safety options, token counts, and
Stanford Alpaca's preprocessing with a loss weight per token: prompt `plw`, completion (EOS included) 1."""

import torch

from plw.prompts import render_prompt


def load_tokenizer(source: str, *, revision: str | None = None, trust_remote_code: bool = False, **kwargs):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code, **kwargs)


def token_counter(tokenizer):
    """texts -> token counts, without special tokens."""
    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return count


# Stanford Alpaca's defaults for the special tokens a tokenizer lacks
DEFAULT_SPECIAL_TOKENS = {"pad_token": "[PAD]", "eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"}


def add_missing_special_tokens(tokenizer, model) -> list[str]:
    """Alpaca's smart_tokenizer_and_embedding_resize: add the special tokens the tokenizer lacks (LLaMA lacks
    [PAD]) and give each new token the mean of the other embeddings. Returns what was added, e.g. ['pad_token']."""
    missing = {name: token for name, token in DEFAULT_SPECIAL_TOKENS.items() if getattr(tokenizer, name) is None}
    if not missing:
        return []
    tokenizer.add_special_tokens(missing)
    old_size = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        for embeddings in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            embeddings[old_size:] = embeddings[:old_size].mean(dim=0, keepdim=True)
    return list(missing)


def missing_bos_note(tokenizer, bos_token_id: int | None) -> str | None:
    """A note when the model's config names a BOS token that the tokenizer does not put before a prompt (a
    LLaMA tokenizer loaded from its SentencePiece file alone adds none, where the Hub's add one)."""
    if bos_token_id is None:
        return None
    first = tokenizer(render_prompt("x"))["input_ids"][:1]
    if first == [bos_token_id]:
        return None
    return (f"the model's config names BOS token id {bos_token_id}, but the tokenizer starts a prompt with "
            f"{first or 'nothing'}: the records train without BOS (set add_bos_token in the tokenizer's config "
            "to add it)")


def tokenize_record(record: dict, tokenizer, plw: float, max_length: int, completion_weight: float = 1.0) -> dict:
    """input_ids of prompt + output + EOS (BOS from the tokenizer, right truncation) and per-token weights: `plw`
    for the prompt, `completion_weight` for the completion and EOS.

    An empty output is a valid record, as in Alpaca: its completion is the EOS token alone."""
    prompt = render_prompt(record["instruction"], record["input"])
    target = f"{record['output']}{tokenizer.eos_token}"
    input_ids = tokenizer(prompt + target, max_length=max_length, truncation=True)["input_ids"]
    prompt_length = len(tokenizer(prompt, max_length=max_length, truncation=True)["input_ids"])
    weights = [plw] * prompt_length + [completion_weight] * (len(input_ids) - prompt_length)
    return {"input_ids": input_ids, "loss_weights": weights[:len(input_ids)]}
