"""Greedy completions of Alpaca prompts by a saved model, batched with left padding."""

import torch
from transformers import AutoModelForCausalLM

from plw.prompts import render_prompt
from plw.tokenize import load_tokenizer


def greedy_completions(model_dir: str, records: list[dict], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Each record's prompt (the Alpaca template of its instruction and input) completed greedily, up to EOS or
    max_new_tokens; the completions without the prompt and special tokens."""
    tokenizer = load_tokenizer(model_dir, padding_side="left")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto").to(device).eval()
    if tokenizer.pad_token is None:  # saved fine-tuned models have Alpaca's [PAD]; a bare base model may not
        tokenizer.pad_token = tokenizer.eos_token
    completions = []
    for start in range(0, len(records), batch_size):
        prompts = [render_prompt(record["instruction"], record["input"])
                   for record in records[start:start + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
        with torch.no_grad():
            generated = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id)
        completions += tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return [completion.strip() for completion in completions]
