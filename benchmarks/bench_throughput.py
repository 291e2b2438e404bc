"""Training throughput: real (non-padding) tokens per second of this project's trainer vs. the Alpaca recipe.

Ours, as train.py runs it: PromptLossWeightTrainer with WeightedCollator(packing=True) (on CPU, with the
packed_sdpa attention, each micro-batch is one padding-free row with restarted position_ids and attention runs
on each sequence alone) and the chunked weighted loss. Baseline, measured in the same run on the same model
(same initial weights), data, batches and machine: Stanford Alpaca's train.py recipe, i.e. Transformers' plain
Trainer, records in random order, dynamic padding to the longest record of the micro-batch, labels with the
prompt set to -100 and the model's own `model(labels=...)` loss. Both run the whole Trainer loop
(`trainer.train()`: data loading, collation, forward, loss, backward, clipping, optimizer and scheduler step,
logging), in alternating rounds so that background load hits both alike. A step is timed from the end of one
optimizer step to the end of the next; warm-up steps of each round are dropped.

Data: synthetic token records with Alpaca's long-tailed length spread (prompt uniform in 20..60 tokens,
completion lognormal with median 50 tokens, capped at --max-length); both sides see the same records in the
same order, so every optimizer step holds the same real tokens. Target: ratio >= 2x on the demo model.

    python benchmarks/bench_throughput.py                      # demo-sized tiny LLaMA on CPU
    python benchmarks/bench_throughput.py --device cuda --dtype bfloat16 --preset 1b \\
        --records-per-step 128 --micro-batch 4                 # the paper's batch, a 1.1B LLaMA; prints MFU
    ... --packed-micro-batch 16                                # ours packs 4x the records per micro-batch
"""

import argparse
import copy
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from machine import describe  # noqa: E402

from plw.attention import default_attention, packed_row_length, register_packed_sdpa  # noqa: E402
from plw.trainer import PromptLossWeightTrainer, WeightedCollator, compile_decoder_layers  # noqa: E402

IGNORE_INDEX = -100
# tiny: config/config.yaml's tiny_llama section (the demo base model); 1b: Llama-3.2-1B's shape, LLaMA-2's vocabulary.
PRESETS = {
    "tiny": dict(vocab_size=512, hidden_size=96, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4),
    # LLaMA-2's vocabulary on a small body: the vocabulary projection is most of a step, so (b) times the loss
    "small": dict(vocab_size=32000, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=4),
    "1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8),
}


def synthetic_records(count: int, vocab: int, max_length: int, plw: float, seed: int, median: float = 50,
                      sigma: float = 0.9) -> list[dict]:
    """Alpaca-like records: prompt 20..60 tokens, completion lognormal(median, sigma), token ids in [3, vocab)
    (0..2 are the special tokens; `vocab` itself is [PAD])."""
    generator = torch.Generator().manual_seed(seed)
    records = []
    for _ in range(count):
        prompt = int(torch.randint(20, 61, (), generator=generator))
        completion = max(1, round(median * math.exp(sigma * float(torch.randn((), generator=generator)))))
        length = min(prompt + completion, max_length)
        ids = torch.randint(3, vocab, (length,), generator=generator).tolist()
        prompt = min(prompt, length)
        records.append({"input_ids": ids, "prompt_length": prompt,
                        "loss_weights": [plw] * prompt + [1.0] * (length - prompt)})
    return records


class AlpacaCollator:
    """Stanford Alpaca's DataCollatorForSupervisedDataset: pad to the longest, labels -100 on padding."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> dict:
        from torch.nn.utils.rnn import pad_sequence

        input_ids = pad_sequence([torch.tensor(e["input_ids"]) for e in examples], batch_first=True,
                                 padding_value=self.pad_token_id)
        labels = pad_sequence([torch.tensor(e["labels"]) for e in examples], batch_first=True,
                              padding_value=IGNORE_INDEX)
        return {"input_ids": input_ids, "labels": labels, "attention_mask": input_ids.ne(self.pad_token_id)}


def step_clock(device: str, pad: int):
    """A TrainerCallback stamping the end of every optimizer step; its forward pre-hook on the model records each
    micro-batch's real tokens and positions without waiting for the device (they are summed at the end)."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.counts: list[tuple] = []  # (real tokens: tensor or int, positions: int) per forward
            self.stamps: list[tuple[float, int]] = []  # (time, forwards so far) at each optimizer step's end

        def count(self, module, args, kwargs):
            mask = kwargs.get("attention_mask")
            input_ids = kwargs["input_ids"]
            # packed rows are padded to the longest row; synthetic records never hold the pad id
            real = mask.sum() if mask is not None else (input_ids != pad).sum()
            self.counts.append((real, input_ids.numel()))

        def on_step_end(self, args, state, control, **kwargs):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            self.stamps.append((time.perf_counter(), len(self.counts)))

        def totals(self, first: int, last: int) -> tuple[int, int]:
            counts = self.counts[first:last]
            return sum(int(real) for real, _ in counts), sum(positions for _, positions in counts)

    return StepClock()


def build_model(preset: str, attn: str, dtype: torch.dtype, device: str, max_length: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**PRESETS[preset], max_position_embeddings=max(512, max_length), tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, pad_token_id=PRESETS[preset]["vocab_size"] - 1,
                         use_cache=False)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, attn_implementation=attn, dtype=dtype)
    return model


def main() -> None:
    register_packed_sdpa()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="model dtype; bfloat16 also turns on the Trainer's bf16 mixed precision")
    parser.add_argument("--fp32-weights", action="store_true", help="with --dtype bfloat16: fp32 weights under bf16 "
                        "autocast, as train.py trains on one GPU (default: the weights in bf16 too)")
    parser.add_argument("--attn", default="sdpa", help="attn_implementation of the baseline (sdpa, eager, "
                        "flash_attention_2, flex_attention)")
    parser.add_argument("--ours-attn", default=None, help="attn_implementation of ours (default: train.py's with "
                        "packing, packed_sdpa; sdpa packs rows of --max-length with a block-diagonal mask)")
    parser.add_argument("--compile", action="store_true", help="compile our side's decoder layers "
                        "(training.compile; the warm-up steps compile)")
    parser.add_argument("--records-per-step", type=int, default=16, help="records per optimizer step (demo: 16)")
    parser.add_argument("--micro-batch", type=int, default=16, help="records per micro-batch (demo: 16, paper: 4)")
    parser.add_argument("--packed-micro-batch", type=int, default=None,
                        help="records per micro-batch of our side (default: --micro-batch, as train.py does; a larger "
                        "value, e.g. 4x, packs to about the padded micro-batch's token budget; global normalization "
                        "gives the same gradient whatever the micro-batching)")
    parser.add_argument("--max-length", type=int, default=512, help="truncation length (Alpaca and the paper: 512)")
    parser.add_argument("--completion-median", type=float, default=50.0, help="tokens")
    parser.add_argument("--completion-sigma", type=float, default=0.9, help="lognormal sigma (0.9: p99 ~ 400 tokens)")
    parser.add_argument("--plw", type=float, default=0.1, help="prompt-loss weight of our side (0 also skips the "
                        "prompt tokens' logits; the baseline computes every position's logits whatever the labels)")
    parser.add_argument("--loss-chunk-size", type=int, default=None, help="default: the project's (2**27 logits)")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per round and side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps at the start of each round")
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternating rounds (ours, baseline, baseline, ours, ...)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on CPU, for steady "
                        "timings on a shared machine; elsewhere and with 0: torch's own)")
    parser.add_argument("--peak-flops", type=float, default=None,
                        help="peak FLOP/s for MFU (default on CUDA: 989e12, H100/H200 dense bf16)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.packed_micro_batch = args.packed_micro_batch or args.micro_batch
    args.ours_attn = args.ours_attn or default_attention(packing=True)
    if args.records_per_step % args.micro_batch or args.records_per_step % args.packed_micro_batch:
        parser.error("--records-per-step must be a multiple of --micro-batch and --packed-micro-batch")
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (a step is timed from the end of the one before)")
    if args.threads is None:
        args.threads = 1 if args.device == "cpu" else 0
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = args.peak_flops or (989e12 if args.device.startswith("cuda") else None)

    from transformers import PrinterCallback, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    dtype = getattr(torch, args.dtype)
    vocab = PRESETS[args.preset]["vocab_size"]
    pad = vocab - 1  # the [PAD] that add_missing_special_tokens appends
    steps_per_round = args.warmup + args.steps
    records = synthetic_records(args.records_per_step * steps_per_round, pad, args.max_length, args.plw, args.seed,
                                args.completion_median, args.completion_sigma)
    ours_data = [{"input_ids": r["input_ids"], "loss_weights": r["loss_weights"]} for r in records]
    alpaca_data = [{"input_ids": r["input_ids"],
                    "labels": [IGNORE_INDEX] * r["prompt_length"] + r["input_ids"][r["prompt_length"]:]}
                   for r in records]

    weights_dtype = torch.float32 if args.fp32_weights else dtype
    model = build_model(args.preset, args.attn, weights_dtype, args.device, args.max_length, args.seed)
    params = sum(p.numel() for p in model.parameters())
    matmul_params = params - model.get_input_embeddings().weight.numel()

    tmp = tempfile.TemporaryDirectory()

    def training_args(micro_batch: int) -> TrainingArguments:
        return TrainingArguments(
            output_dir=tmp.name, per_device_train_batch_size=micro_batch,
            gradient_accumulation_steps=args.records_per_step // micro_batch, max_steps=steps_per_round,
            learning_rate=2e-5, warmup_steps=1, lr_scheduler_type="cosine", bf16=args.dtype == "bfloat16",
            use_cpu=args.device == "cpu", dataloader_pin_memory=False, save_strategy="no", logging_steps=1,
            seed=args.seed, data_seed=args.seed, remove_unused_columns=False, report_to=[], disable_tqdm=True,
            average_tokens_across_devices=True)

    row_length = packed_row_length(args.ours_attn, args.max_length)  # as train.py
    packing_collator = WeightedCollator(pad, packing=True, row_length=row_length)
    sides = {}
    for name in ("packed", "padded"):
        clock = step_clock(args.device, pad)
        side_model = model if name == "packed" else copy.deepcopy(model)
        side_model.set_attn_implementation(args.ours_attn if name == "packed" else args.attn)
        side_model.register_forward_pre_hook(clock.count, with_kwargs=True)
        if name == "packed":
            trainer = PromptLossWeightTrainer(model=side_model, args=training_args(args.packed_micro_batch),
                                              train_dataset=ours_data,
                                              data_collator=packing_collator, callbacks=[clock],
                                              loss_chunk_size=args.loss_chunk_size)
        else:
            trainer = Trainer(model=side_model, args=training_args(args.micro_batch), train_dataset=alpaca_data,
                              data_collator=AlpacaCollator(pad), callbacks=[clock])
        trainer.remove_callback(PrinterCallback)  # the per-step log lines (logging itself stays on, as in train.py)
        sides[name] = (trainer, clock)
    if args.compile:  # after the baseline's copy of the model
        compile_decoder_layers(sides["packed"][0].model)

    times = {name: 0.0 for name in sides}
    tokens = {name: 0 for name in sides}
    positions = {name: 0 for name in sides}
    for round_ in range(args.rounds):
        for name in (("packed", "padded") if round_ % 2 == 0 else ("padded", "packed")):
            trainer, clock = sides[name]
            clock.stamps.clear()
            clock.counts.clear()
            trainer.train()
            first, last = clock.stamps[args.warmup - 1], clock.stamps[-1]
            times[name] += last[0] - first[0]
            real, seen = clock.totals(first[1], last[1])
            tokens[name] += real
            positions[name] += seen
    tmp.cleanup()

    if tokens["packed"] != tokens["padded"]:
        print(f"warning: the two sides saw different real tokens ({tokens['packed']} vs {tokens['padded']})")
    rate = {name: tokens[name] / times[name] for name in sides}
    real_per_round = tokens["padded"] // args.rounds
    print(f"machine: {describe(args.device)}")
    print(f"model: {args.preset} LLaMA, {params / 1e6:.1f}M parameters, {args.dtype}"
          f"{' (fp32 weights)' if args.fp32_weights else ''}, attn {args.ours_attn} (ours"
          f"{', compiled layers' if args.compile else ''}) and {args.attn} (alpaca), "
          f"device {args.device}")
    print(f"data: {args.records_per_step} records per step in micro-batches of {args.packed_micro_batch} (ours) and "
          f"{args.micro_batch} (alpaca), "
          f"max_length {args.max_length}, {real_per_round / (args.steps * args.records_per_step):.0f} real tokens "
          f"per record; padding fills {1 - tokens['padded'] / positions['padded']:.0%} of the baseline's positions")
    print(f"timed: {args.rounds} rounds x {args.steps} steps per side (after {args.warmup} warm-up steps each)")
    print(f"packed (ours):   {rate['packed']:10.0f} tok/s  ({times['packed'] / (args.rounds * args.steps):.3f} s/step)")
    print(f"padded (alpaca): {rate['padded']:10.0f} tok/s  ({times['padded'] / (args.rounds * args.steps):.3f} s/step)")
    print(f"ratio packed / padded: {rate['packed'] / rate['padded']:.2f}x (target >= 2x)")
    if peak:
        for name in sides:
            print(f"MFU {name}: {6 * matmul_params * rate[name] / peak:.1%} "
                  f"(6 x {matmul_params / 1e9:.2f}B matmul parameters x real tok/s / {peak:.3g} FLOP/s)")


if __name__ == "__main__":
    main()
