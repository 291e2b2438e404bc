"""Transformers' Trainer with the prompt-loss-weighted objective, and a padding-free packing collator.

Loss normalizations (config `training.loss_normalization`):
- global: Σ w·ℓ / Σ w over all tokens of one optimizer step, across every micro-batch of gradient
  accumulation and every data-parallel rank;
- micro_batch: Σ w·ℓ / Σ w per micro-batch, averaged over accumulation steps (the 2023 Trainer's behaviour).
With either, PLW 0 is Alpaca's masked loss and PLW 1 the plain unmasked loss.
"""

import torch
from transformers import Trainer

from plw.loss import weighted_token_loss_sum


class WeightedCollator:
    """Batches of tokenized records. packing=True concatenates them into one row with restarted position_ids
    (the attention then never crosses sequences) and zeroes the weight of each sequence's first label."""

    def __init__(self, pad_token_id: int, packing: bool):
        self.pad_token_id = pad_token_id
        self.packing = packing

    def __call__(self, examples: list[dict]) -> dict:
        if self.packing:
            return self.pack(examples)
        return self.pad(examples)

    def pad(self, examples: list[dict]) -> dict:
        longest = max(len(example["input_ids"]) for example in examples)
        input_ids = torch.full((len(examples), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
        weights = torch.zeros((len(examples), longest), dtype=torch.float32)
        for row, example in enumerate(examples):
            length = len(example["input_ids"])
            input_ids[row, :length] = torch.tensor(example["input_ids"])
            attention_mask[row, :length] = 1
            weights[row, :length] = torch.tensor(example["loss_weights"])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_weights": weights}

    def pack(self, examples: list[dict]) -> dict:
        input_ids, position_ids, weights = [], [], []
        for example in examples:
            length = len(example["input_ids"])
            input_ids += example["input_ids"]
            position_ids += range(length)
            weights += [0.0] + list(example["loss_weights"][1:])
        return {"input_ids": torch.tensor([input_ids]), "position_ids": torch.tensor([position_ids]),
                "loss_weights": torch.tensor([weights], dtype=torch.float32)}


def real_tokens(batch: dict) -> int:
    """Tokens that are not padding (a packed batch has none)."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return batch["input_ids"].numel()


class PromptLossWeightTrainer(Trainer):
    def __init__(self, *args, loss_normalization: str = "global", loss_chunk_size: int = 4096, **kwargs):
        super().__init__(*args, **kwargs)
        if loss_normalization not in ("global", "micro_batch"):
            raise ValueError(f"loss_normalization must be 'global' or 'micro_batch', not {loss_normalization!r}")
        self.loss_normalization = loss_normalization
        self.loss_chunk_size = loss_chunk_size
        # global: our loss is already divided by the step's weight sum; micro_batch: the Trainer averages it.
        self.loss_is_scaled_for_ga = loss_normalization == "global"
        self._since_log = {"tokens": 0, "weight_sum": 0.0}
        # The chunked loss needs the final hidden states; capture them from the decoder's final norm so the
        # model itself only projects one position onto the vocabulary.
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self._lm_head = base.get_output_embeddings()
        self._captured = {}
        base.get_decoder().norm.register_forward_hook(
            lambda module, inputs, output: self._captured.__setitem__("hidden", output))

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """The weight sum of the optimizer step (all micro-batches, all ranks) for global normalization."""
        weight_sum = sum(batch["loss_weights"][:, 1:].sum() for batch in batch_samples).to(device)
        self._since_log["tokens"] += sum(real_tokens(batch) for batch in batch_samples)
        self._since_log["weight_sum"] += float(weight_sum)
        if self.loss_normalization != "global":
            return None
        if self.args.world_size > 1:
            weight_sum = self.accelerator.gather(weight_sum).sum()
        return weight_sum

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop("loss_weights")
        outputs = model(**inputs, logits_to_keep=1)
        loss_sum = weighted_token_loss_sum(self._captured.pop("hidden"), self._lm_head.weight,
                                           inputs["input_ids"], weights, self.loss_chunk_size)
        if num_items_in_batch is None:
            loss = loss_sum / weights[:, 1:].sum().clamp(min=1e-12)
        else:
            # DDP/FSDP average gradients over ranks; the global weight sum already spans all ranks.
            loss = loss_sum / num_items_in_batch * self.args.world_size
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:
            logs.update(self._since_log)
            self._since_log = {"tokens": 0, "weight_sum": 0.0}
        super().log(logs, *args, **kwargs)
