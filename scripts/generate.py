"""One cell's answers to a judged benchmark's instructions: the Alpaca template, greedy decoding, kept in alpaca-eval's
model-outputs format (instruction, output, generator, dataset) beside each item's reference output."""

import argparse
import json

import pandas as pd
import torch

from plw.generate import greedy_completions
from plw.io import write_parquet

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--cell", required=True, help='JSON {"model", "dataset", "plw", "seed"[, "completion_weight"]}')
parser.add_argument("--benchmark", required=True, help="the judged benchmark's name")
parser.add_argument("--model", required=True, help="the fine-tuned model's directory")
parser.add_argument("--data", required=True, help="the benchmark's records (prefetched Parquet)")
parser.add_argument("--max-new-tokens", type=int, required=True)
parser.add_argument("--output", required=True)
args = parser.parse_args()
cell = json.loads(args.cell)

items = pd.read_parquet(args.data).rename(columns={"output": "reference"})
# a prompt asked several times (PandaLM's test set pairs each with several references) is answered once
prompts = items.drop_duplicates(["instruction", "input"])
prompts = prompts.assign(output=greedy_completions(args.model, prompts.to_dict("records"), args.max_new_tokens))
generations = items.merge(prompts[["instruction", "input", "output"]], on=["instruction", "input"], how="left")
generations["generator"] = ("{model}/{dataset}/plw {plw:g}, completion weight {completion_weight:g}/seed {seed}"
                             .format(**{"completion_weight": 1, **cell}))
generations["dataset"] = args.benchmark
generations["gpus"] = int(torch.cuda.is_available())  # greedy_completions runs on one GPU where there is one
write_parquet(generations, args.output)
print(f"{len(prompts)} instructions answered ({len(generations)} items); the first:")
for item in prompts.head(3).itertuples():
    print(f"--- {item.instruction!r} {item.input!r}\n    {item.output!r}")
