"""One optimizer step of PromptLossWeightTrainer on the tiny model, as one process or as one rank of several
(torchrun, gloo on CPU); rank 0 saves the step's gradient (before the optimizer) and its log entry.

    python tests/data_parallel_step.py MODEL_DIR OUTPUT PER_DEVICE ACCUMULATION
    torchrun --nproc_per_node 2 tests/data_parallel_step.py MODEL_DIR OUTPUT PER_DEVICE ACCUMULATION
"""

import json
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, TrainerCallback, TrainingArguments

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from plw.tokenize import add_missing_special_tokens, load_tokenizer, tokenize_record  # noqa: E402
from plw.trainer import PromptLossWeightTrainer, WeightedCollator  # noqa: E402

RECORDS = 16

model_dir, output, per_device, accumulation = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
records = json.loads((REPO / "resources" / "demo" / "alpaca_demo.json").read_text(encoding="utf-8"))[:RECORDS]
tokenizer = load_tokenizer(model_dir, model_max_length=128)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
add_missing_special_tokens(tokenizer, model)
gradient = {}


class CaptureGradient(TrainerCallback):
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        gradient.update({name: parameter.grad.detach().clone() for name, parameter in model.named_parameters()})


with tempfile.TemporaryDirectory() as checkpoints:
    trainer = PromptLossWeightTrainer(
        model=model, train_dataset=[tokenize_record(record, tokenizer, 0.1, 128) for record in records],
        args=TrainingArguments(output_dir=checkpoints, per_device_train_batch_size=per_device,
                               gradient_accumulation_steps=accumulation, max_steps=1, max_grad_norm=0,
                               learning_rate=1e-3, use_cpu=True, save_strategy="no", logging_steps=1, report_to=[],
                               remove_unused_columns=False, disable_tqdm=True),
        data_collator=WeightedCollator(tokenizer.pad_token_id, packing=True, row_length=128),
        callbacks=[CaptureGradient()])
    assert trainer.args.world_size * per_device * accumulation == RECORDS, "one step must cover every record"
    trainer.train()
    if trainer.is_world_process_zero():
        log = next(entry for entry in trainer.state.log_history if "loss" in entry)
        torch.save({"gradient": gradient, "log": log, "world_size": trainer.args.world_size}, output)
