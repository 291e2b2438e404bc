"""Transformers' Trainer with the prompt-loss-weighted objective, and a padding-free packing collator.

Loss normalizations (config `training.loss_normalization`):
- global: Σ w·ℓ / Σ w over all tokens of one optimizer step, across every micro-batch of gradient
  accumulation and every data-parallel rank;
- micro_batch: Σ w·ℓ / Σ w per micro-batch, averaged over accumulation steps (the 2023 Trainer's behaviour);
- nonzero_tokens: Σ w·ℓ / (the number of tokens of non-zero weight), over one optimizer step as global (WIT's and
  TRL's prompt-loss-weight normalization). At small PLW this is another experiment: the prompt tokens count
  whole in the denominator, so the completion's gradient shrinks with them (docs/loss.md).
With each, PLW 0 is Alpaca's masked loss, and PLW 1 with completion weight 1 the plain unmasked loss.
"""

from collections import Counter

import torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from transformers import Trainer
from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

from plw.loss import weighted_token_loss_sum


def unwrap_peft(model):
    """The Transformers model itself, also inside a peft (LoRA) wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def compile_decoder_layers(model) -> None:
    """torch.compile each decoder layer in place (regional compilation): the layers share one compiled graph, which
    fuses a layer's elementwise work (norms, rotary embedding, SwiGLU) into few kernels, and the state dict keeps
    its keys. The first two micro-batch lengths compile it (static, then dynamic); later ones reuse it."""
    for layer in unwrap_peft(model).get_decoder().layers:
        layer.compile()


class WeightedCollator:
    """Micro-batches of tokenized records, each token with its loss weight.

    packing=False pads every record to the longest (with an attention mask), as Alpaca does. packing=True
    packs the records with restarted position_ids and the sequence boundaries (`cu_seq_lens_q`), so attention
    never crosses sequences, and zeroes the weight of each sequence's first label (it would be predicted from
    the previous sequence). With row_length=None all records form one row, without padding (for attentions
    that cost each sequence's length squared: packed_sdpa, flash-attention); with a row_length, rows of at
    most that many tokens, first-fit decreasing (sdpa's block-diagonal mask costs each row's length squared),
    padded to the longest row; a row's padding is a sequence of its own with weight 0.
    """

    def __init__(self, pad_token_id: int, packing: bool, row_length: int | None = 512):
        self.pad_token_id = pad_token_id
        self.packing = packing
        self.row_length = row_length

    def __call__(self, examples: list[dict]) -> dict:
        rows = self.pack_rows(examples) if self.packing else [[example] for example in examples]
        records = [example for row in rows for example in row]
        lengths = torch.tensor([len(example["input_ids"]) for example in records])
        row_lengths = torch.tensor([sum(len(example["input_ids"]) for example in row) for row in rows])
        longest = int(row_lengths.max())
        # each token's row, column and position in its sequence, vectorized (a tensor per record made
        # collation a tenth of a GPU step)
        flat = torch.arange(int(lengths.sum()))
        token_rows = torch.arange(len(rows)).repeat_interleave(row_lengths)
        columns = flat - (row_lengths.cumsum(0) - row_lengths).repeat_interleave(row_lengths)
        sequence_starts = lengths.cumsum(0) - lengths
        token_ids = [token for example in records for token in example["input_ids"]]
        token_weights = [weight for example in records for weight in example["loss_weights"]]
        input_ids = torch.full((len(rows), longest), self.pad_token_id, dtype=torch.long)
        input_ids[token_rows, columns] = torch.tensor(token_ids, dtype=torch.long)
        weights = torch.zeros((len(rows), longest), dtype=torch.float32)
        weights[token_rows, columns] = torch.tensor(token_weights, dtype=torch.float32)
        if self.packing:
            weights[token_rows[sequence_starts], columns[sequence_starts]] = 0.0
        # a row's padding counts as one more sequence, from position 0
        position_ids = torch.arange(longest) - row_lengths[:, None]
        position_ids[token_rows, columns] = flat - sequence_starts.repeat_interleave(lengths)
        batch = {"input_ids": input_ids, "loss_weights": weights, "num_real_tokens": lengths.sum()}
        if self.packing:
            # the sequence boundaries in the flattened rows, as Transformers' varlen attention takes them
            (boundaries, _), (longest_sequence, _) = prepare_fa_kwargs_from_position_ids(position_ids)
            batch.update(position_ids=position_ids, cu_seq_lens_q=boundaries, cu_seq_lens_k=boundaries,
                         max_length_q=int(longest_sequence), max_length_k=int(longest_sequence))
        else:  # a row per record
            batch["attention_mask"] = (torch.arange(longest) < lengths[:, None]).long()
        return batch

    def pack_rows(self, examples: list[dict]) -> list[list[dict]]:
        if self.row_length is None:
            return [examples]
        rows, room = [], []
        for example in sorted(examples, key=lambda example: len(example["input_ids"]), reverse=True):
            length = len(example["input_ids"])
            fitting = next((index for index, free in enumerate(room) if length <= free), None)
            if fitting is None:
                rows.append([example])
                room.append(max(self.row_length, length) - length)
            else:
                rows[fitting].append(example)
                room[fitting] -= length
        return rows


def real_tokens(batch: dict) -> int:
    """Tokens of the records in a micro-batch, without padding."""
    return int(batch["num_real_tokens"])


def sharding(model) -> str:
    """How this rank holds the model, to say what ran: FSDP2 makes each parameter a DTensor whose local shard is
    a slice of it, and gathers the parameters module by module (a decoder layer at a time)."""
    parameters = list(model.parameters())
    local = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in parameters)
    layouts = {f"{p.placements} over {p.device_mesh.size()} ranks" if isinstance(p, DTensor) else "whole"
               for p in parameters}
    modules = Counter(type(module).__name__.removeprefix("FSDP") for module in model.modules()
                      if isinstance(module, FSDPModule))
    return (f"{local} of {sum(p.numel() for p in parameters)} parameter values, {', '.join(sorted(layouts))}; "
            f"FSDP modules: {', '.join(f'{count} {name}' for name, count in sorted(modules.items()))}")


NORMALIZATIONS = ("global", "micro_batch", "nonzero_tokens")


class PromptLossWeightTrainer(Trainer):
    def __init__(self, *args, loss_normalization: str = "global", loss_chunk_size: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if loss_normalization not in NORMALIZATIONS:
            raise ValueError(f"loss_normalization must be one of {', '.join(NORMALIZATIONS)}, "
                             f"not {loss_normalization!r}")
        self.loss_normalization = loss_normalization
        self.loss_chunk_size = loss_chunk_size
        # global, nonzero_tokens: our loss is already divided by the step's total; micro_batch: the Trainer averages
        self.loss_is_scaled_for_ga = loss_normalization != "micro_batch"
        self._since_log = {"tokens": 0, "weight_sum": 0.0}
        # The chunked loss needs the final hidden states; capture them from the decoder's final norm so the
        # model itself only projects one position onto the vocabulary.
        base = unwrap_peft(self.model)
        self._lm_head = base.get_output_embeddings()
        self._captured = {}
        base.get_decoder().norm.register_forward_hook(
            lambda module, inputs, output: self._captured.__setitem__("hidden", output))

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """The normalizer of the optimizer step (all micro-batches, all ranks): its weight sum (global) or its
        count of tokens of non-zero weight (nonzero_tokens); the step's tokens and weight sum also go to the log."""
        weights = sum(batch["loss_weights"][:, 1:].sum() for batch in batch_samples).double()
        weighted = sum((batch["loss_weights"][:, 1:] != 0).sum() for batch in batch_samples).double()
        tokens = torch.tensor(sum(real_tokens(batch) for batch in batch_samples), dtype=torch.float64,
                              device=weights.device)  # batches are on the accelerator already, or on the CPU
        step = torch.stack([weights, weighted, tokens]).to(device)
        if self.args.world_size > 1:
            step = self.accelerator.gather(step).reshape(-1, 3).sum(dim=0)
        step_weight_sum, _, step_tokens = step.tolist()  # one host sync
        self._since_log["weight_sum"] += step_weight_sum
        self._since_log["tokens"] += int(step_tokens)
        return {"global": step[0].float(), "nonzero_tokens": step[1].float()}.get(self.loss_normalization)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop("loss_weights")
        inputs.pop("num_real_tokens", None)  # bookkeeping of the collator, no model input
        # use_cache=False: with a cache Transformers would not read packed sequences from position_ids
        outputs = model(**inputs, logits_to_keep=1, use_cache=False)
        # the model's forward runs under Accelerate's autocast, this loss outside it: project in the same
        # precision as the model's own lm_head (bf16 matmuls, not fp32, with fp32 weights and bf16 training)
        with self.accelerator.autocast():
            loss_sum = weighted_token_loss_sum(self._captured.pop("hidden"), self.head_weight(),
                                               inputs["input_ids"], weights, self.loss_chunk_size)
        if num_items_in_batch is None:
            loss = loss_sum / weights[:, 1:].sum().clamp(min=1e-12)
        else:
            # DDP/FSDP average gradients over ranks; the step's normalizer already spans all ranks.
            loss = loss_sum / num_items_in_batch.clamp(min=1e-12) * self.args.world_size
        return (loss, outputs) if return_outputs else loss

    def head_weight(self) -> torch.Tensor:
        """The LM head's full weight, for the loss outside the model's forward. FSDP2 holds each rank's shard of
        it (a DTensor) outside forward and backward: its unshard() gathers the full weight (a no-op where the
        forward left it gathered, as Accelerate's unit of final norm and head does), and the backward gives the
        weight's gradient back to the shards."""
        if isinstance(self._lm_head, FSDPModule):
            self._lm_head.unshard()
        return self._lm_head.weight

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:
            logs.update(self._since_log)
            self._since_log = {"tokens": 0, "weight_sum": 0.0}
        super().log(logs, *args, **kwargs)
