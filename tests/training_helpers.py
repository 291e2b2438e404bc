"""Helpers of the training tests: a Trainer as the tests build it, Alpaca's own labels, and train.py's command."""

import json
import sys
from pathlib import Path

import torch
from transformers import TrainingArguments

from plw.prompts import PROMPT_NO_INPUT, PROMPT_WITH_INPUT
from plw.trainer import PromptLossWeightTrainer, WeightedCollator

REPO = Path(__file__).resolve().parents[1]
IGNORE_INDEX = -100


def make_trainer(model, tmp_path, *, per_device: int, accumulation: int, normalization: str = "global",
                 packing: bool = False, pad_token_id: int = 0, **training_args) -> PromptLossWeightTrainer:
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=per_device,
                             gradient_accumulation_steps=accumulation, report_to=[], learning_rate=0.0,
                             remove_unused_columns=False, disable_tqdm=True, **training_args)
    return PromptLossWeightTrainer(model=model, args=args, data_collator=WeightedCollator(pad_token_id, packing),
                                   loss_normalization=normalization)

def alpaca_labels(record: dict, tokenizer, max_length: int = 128) -> tuple[list[int], list[int]]:
    """Stanford Alpaca's train.py preprocess(): labels are input_ids with the source tokens set to -100."""
    source = (PROMPT_WITH_INPUT if record["input"] else PROMPT_NO_INPUT).format_map(record)
    example = source + f"{record['output']}{tokenizer.eos_token}"
    input_ids = tokenizer(example, max_length=max_length, truncation=True).input_ids
    source_len = len(tokenizer(source, max_length=max_length, truncation=True).input_ids)
    return input_ids, [IGNORE_INDEX] * source_len + input_ids[source_len:]

def loss_of(trainer, batch, num_items=None) -> torch.Tensor:
    return trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=num_items)

def train_command(tmp_path: Path, data: Path, base: Path, name: str, settings: dict, plw: str = "0.1") -> list:
    """scripts/train.py's command line as the train rule runs it, writing under tmp_path / name."""
    return [sys.executable, str(REPO / "scripts" / "train.py"), "--data", str(data), "--base-model", str(base),
            "--plw", plw, "--seed", "42", "--settings", json.dumps(settings),
            "--checkpoints", str(tmp_path / name / "checkpoints"), "--output-model", str(tmp_path / name / "model"),
            "--output-log", str(tmp_path / name / "train_log.parquet")]
