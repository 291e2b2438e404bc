"""Loss memory: peak memory of the weighted loss and its backward, chunked vs. naive, at LLaMA-2 and LLaMA-3
vocabularies.

Chunked: this project's weighted_token_loss_sum (chunks of --chunk-sizes tokens; "auto" is the project's
default `training.loss_chunk_size`, chunks of 2**27 logits). Naive, measured in the same run on the same inputs:
the full logits `(hidden @ W.T).float()`, cross_entropy(reduction="none"), weighted sum. Reported: the transient memory
of forward+backward, i.e. the peak minus the inputs (hidden states, head weight, targets, weights) and their
gradients, which every method holds.

On CPU each variant runs in a fresh subprocess and the peak is its ru_maxrss (resident high-water mark) minus
that of a baseline subprocess that only allocates and fills the inputs and gradient-sized buffers (torch's
allocations are invisible to tracemalloc). On CUDA: torch.cuda.max_memory_allocated around each variant.
Target: >= 4x less than naive at vocab 128256.

    python benchmarks/bench_loss_memory.py                           # CPU: 8192 tokens, hidden 128
    python benchmarks/bench_loss_memory.py --device cuda --dtype bfloat16 --hidden 2048 --tokens 16384
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from machine import describe  # noqa: E402

from plw.loss import weighted_token_loss_sum  # noqa: E402


def make_inputs(tokens: int, hidden: int, vocab: int, dtype: torch.dtype, device: str, seed: int):
    """One row of tokens + 1 positions, so there are exactly `tokens` next-token predictions, all weighted > 0."""
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(1, tokens + 1, hidden, generator=generator).to(device=device, dtype=dtype)
    head = (torch.randn(vocab, hidden, generator=generator) * hidden ** -0.5).to(device=device, dtype=dtype)
    input_ids = torch.randint(0, vocab, (1, tokens + 1), generator=generator).to(device)
    weights = torch.where(torch.rand(1, tokens + 1, generator=generator) < 0.3, 0.1, 1.0).to(device)
    return states.requires_grad_(), head.requires_grad_(), input_ids, weights


def naive_loss(states, head, input_ids, weights) -> torch.Tensor:
    logits = (states[0, :-1] @ head.T).float()
    return (F.cross_entropy(logits, input_ids[0, 1:], reduction="none") * weights[0, 1:]).sum()


def run_variant(variant: str, args) -> dict:
    """Forward + backward of one variant ('inputs' only allocates); returns seconds and, on CPU, ru_maxrss bytes."""
    dtype = getattr(torch, args.dtype)
    states, head, input_ids, weights = make_inputs(args.tokens, args.hidden, args.vocab, dtype, args.device, args.seed)
    cuda = args.device.startswith("cuda")
    if variant == "inputs":
        # what every variant ends up holding besides the loss's own memory: the inputs and their gradients (filled,
        # so that their pages are resident like autograd's)
        states.grad, head.grad = torch.ones_like(states), torch.ones_like(head)
        return {"seconds": 0.0, "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if cuda:
        torch.cuda.synchronize()
        held = (torch.cuda.memory_allocated() + states.numel() * states.element_size()
                + head.numel() * head.element_size())
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if variant == "naive":
        loss = naive_loss(states, head, input_ids, weights)
    else:
        chunk_size = None if variant.endswith(":auto") else int(variant.split(":")[1])
        loss = weighted_token_loss_sum(states, head, input_ids, weights, chunk_size=chunk_size)
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
    result = {"seconds": time.perf_counter() - start, "loss": loss.item()}
    if cuda:
        result["transient"] = torch.cuda.max_memory_allocated() - held  # held: inputs and their gradients
    else:
        result["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def in_subprocess(variant: str, args, vocab: int) -> dict:
    command = [sys.executable, __file__, "--child", variant, "--vocab", str(vocab), "--tokens", str(args.tokens),
               "--hidden", str(args.hidden), "--dtype", args.dtype, "--device", args.device,
               "--threads", str(args.threads), "--seed", str(args.seed)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="hidden states and head")
    parser.add_argument("--tokens", type=int, default=8192, help="next-token predictions in the batch (8192: a "
                        "micro-batch of 16 records of 512 tokens)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden size (small on CPU so the logits dominate "
                        "and the run stays short; 2048 on a GPU)")
    parser.add_argument("--vocabs", default="32000,128256", help="LLaMA-2's and LLaMA-3's vocabulary sizes")
    parser.add_argument("--chunk-sizes", default="auto,4096", help="chunk sizes of the chunked loss (auto: the "
                        "project's default)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on CPU, for steady "
                        "timings on a shared machine; elsewhere and with 0: torch's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads is None:
        args.threads = 1 if args.device == "cpu" else 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_variant(args.child, args)))
        return

    cuda = args.device.startswith("cuda")
    variants = ["naive"] + [f"chunked:{size}" for size in args.chunk_sizes.split(",")]
    print(f"machine: {describe(args.device)}")
    print(f"inputs: {args.tokens} predictions, hidden {args.hidden}, {args.dtype}; memory = peak minus inputs and "
          f"their gradients ({'max_memory_allocated' if cuda else 'ru_maxrss of a subprocess per variant'})")
    for vocab in (int(v) for v in args.vocabs.split(",")):
        args.vocab = vocab
        if cuda:
            results = {}
            for variant in variants:
                torch.cuda.empty_cache()
                run_variant(variant, args)  # warm-up (kernels, allocator)
                torch.cuda.empty_cache()
                results[variant] = run_variant(variant, args)
        else:
            base = in_subprocess("inputs", args, vocab)["maxrss"]
            results = {variant: in_subprocess(variant, args, vocab) for variant in variants}
            for result in results.values():
                result["transient"] = result["maxrss"] - base
        logits_gib = args.tokens * vocab * 4 / 2**30
        print(f"vocab {vocab} (one fp32 copy of the full logits: {logits_gib:.2f} GiB):")
        naive = results["naive"]
        for variant in variants:
            result = results[variant]
            ratio = naive["transient"] / max(result["transient"], 1)
            print(f"  {variant:14s} {result['transient'] / 2**30:7.2f} GiB  {result['seconds']:6.2f} s  "
                  f"loss {result['loss']:.6g}  naive/this: {ratio:.2f}x")
    print("target: >= 4x less than naive at vocab 128256")


if __name__ == "__main__":
    main()
