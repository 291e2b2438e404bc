"""The embedded demo's base model: a byte-level BPE tokenizer and a tiny LlamaForCausalLM.

Saved with `save_pretrained`, so every later rule loads it exactly as it would load a Hub model. Like
LLaMA's tokenizer it adds BOS, has EOS and no pad token (training adds one, as Alpaca does).
"""

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch.nn.utils.rnn import pad_sequence
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from plw.prompts import render_prompt

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]


def train_tokenizer(texts: list[str], vocab_size: int, model_max_length: int = 512) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                             special_tokens=[("<s>", bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=model_max_length)


def build_tiny_llama(texts: list[str], out_dir: str | Path, *, vocab_size: int = 512, hidden_size: int = 96,
                     intermediate_size: int = 256, num_hidden_layers: int = 2, num_attention_heads: int = 4,
                     pretrain_epochs: int = 0, seed: int = 0) -> Path:
    """Train the tokenizer on `texts`, initialise the model, optionally pre-train it on `texts`, save both."""
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(texts, vocab_size)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_attention_heads, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    if pretrain_epochs:
        pretrain(model, tokenizer, texts, pretrain_epochs, seed)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def pretrain(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, texts: list[str], epochs: int,
             seed: int, batch_size: int = 16, learning_rate: float = 3e-3) -> None:
    """Plain next-token pre-training, so the base model knows the demo's words before fine-tuning."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    sequences = [torch.tensor(tokenizer(text + tokenizer.eos_token).input_ids[:256]) for text in texts]
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(sequences), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            batch = [sequences[i] for i in order[start:start + batch_size]]
            input_ids = pad_sequence(batch, batch_first=True, padding_value=tokenizer.eos_token_id)
            attention_mask = pad_sequence([torch.ones_like(s) for s in batch], batch_first=True)
            labels = input_ids.masked_fill(attention_mask == 0, -100)
            model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()


def corpus_texts(records: list[dict]) -> list[str]:
    """The demo corpus: each record in the Alpaca prompt format, so the tokenizer learns the template's words."""
    return [render_prompt(record["instruction"], record.get("input", "")) + record["output"] for record in records]
