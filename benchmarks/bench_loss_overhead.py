"""Loss overhead: forward+backward time with this project's weighted loss vs. Transformers' plain loss.

Ours: PromptLossWeightTrainer.compute_loss (the model runs with logits_to_keep=1, the final norm's output is
captured and weighted_token_loss_sum projects it onto the vocabulary in chunks, making the loss's gradients as it
goes), then backward.
Baseline, measured in the same run on the same model and the same batches: `model(input_ids, labels=labels).loss`
then backward. The batches hold no padding and the prompt-loss weight is > 0, so every position is in both
losses (our loss skips zero-weight positions, which would only flatter it). The two alternate, warm-up first;
the medians of the repetitions are compared. Target: ours / plain <= 1.03x.

    python benchmarks/bench_loss_overhead.py                    # demo-sized tiny LLaMA on CPU
    python benchmarks/bench_loss_overhead.py --device cuda --dtype bfloat16 --preset 1b --batch 8
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_throughput import PRESETS, build_model  # noqa: E402
from machine import describe  # noqa: E402

from plw.trainer import PromptLossWeightTrainer  # noqa: E402

IGNORE_INDEX = -100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--batch", type=int, default=8, help="sequences per batch")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per sequence (no padding)")
    parser.add_argument("--prompt-len", type=int, default=40, help="leading tokens of each sequence that are prompt")
    parser.add_argument("--plw", type=float, default=0.1, help="our prompt-loss weight (> 0: every position counts)")
    parser.add_argument("--loss-chunk-size", type=int, default=None, help="default: the project's (2**27 logits)")
    parser.add_argument("--batches", type=int, default=2, help="distinct batches, cycled")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on CPU, for steady "
                        "timings on a shared machine; elsewhere and with 0: torch's own)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads is None:
        args.threads = 1 if args.device == "cpu" else 0
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model = build_model(args.preset, args.attn, getattr(torch, args.dtype), args.device, args.seq_len, args.seed)
    vocab = PRESETS[args.preset]["vocab_size"]
    tmp = tempfile.TemporaryDirectory()
    trainer = PromptLossWeightTrainer(
        model=model, args=TrainingArguments(output_dir=tmp.name, use_cpu=args.device == "cpu", report_to=[],
                                            remove_unused_columns=False, disable_tqdm=True),
        loss_chunk_size=args.loss_chunk_size)
    model.train()

    generator = torch.Generator().manual_seed(args.seed)
    batches = []
    for _ in range(args.batches):
        input_ids = torch.randint(3, vocab - 1, (args.batch, args.seq_len), generator=generator)
        weights = torch.ones(args.batch, args.seq_len)
        weights[:, :args.prompt_len] = args.plw
        labels = input_ids.clone()
        labels[:, :args.prompt_len] = IGNORE_INDEX  # Alpaca's labels; the logits of every position are computed anyway
        batches.append({"input_ids": input_ids.to(args.device), "loss_weights": weights.to(args.device),
                        "labels": labels.to(args.device)})

    def ours(batch):
        loss = trainer.compute_loss(model, {"input_ids": batch["input_ids"], "loss_weights": batch["loss_weights"]})
        loss.backward()

    def plain(batch):
        model(input_ids=batch["input_ids"], labels=batch["labels"]).loss.backward()

    def timed(step, batch) -> float:
        model.zero_grad(set_to_none=True)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(batch)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times = {"ours": [], "plain": []}
    steps = {"ours": ours, "plain": plain}
    for rep in range(args.warmup + args.repeats):
        batch = batches[rep % len(batches)]
        for name in (("ours", "plain") if rep % 2 == 0 else ("plain", "ours")):
            elapsed = timed(steps[name], batch)
            if rep >= args.warmup:
                times[name].append(elapsed)
    tmp.cleanup()

    median = {name: statistics.median(values) for name, values in times.items()}
    params = sum(p.numel() for p in model.parameters())
    tokens = args.batch * args.seq_len
    print(f"machine: {describe(args.device)}")
    print(f"model: {args.preset} LLaMA, {params / 1e6:.1f}M parameters, vocab {vocab}, {args.dtype}, attn {args.attn}")
    print(f"batch: {args.batch} x {args.seq_len} tokens, no padding; {args.repeats} repetitions after {args.warmup} "
          f"warm-up, alternating; medians")
    print(f"plain model(labels=...).loss fwd+bwd:    {median['plain'] * 1e3:9.1f} ms  "
          f"({tokens / median['plain']:.0f} tok/s)")
    print(f"weighted chunked loss (ours) fwd+bwd:    {median['ours'] * 1e3:9.1f} ms  "
          f"({tokens / median['ours']:.0f} tok/s)")
    print(f"ratio ours / plain: {median['ours'] / median['plain']:.3f}x (target <= 1.03x)")


if __name__ == "__main__":
    main()
