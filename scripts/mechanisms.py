"""One cell's mechanism measures: the variability of its training loss and its weights' distance from the base model."""

import argparse
import json
from pathlib import Path

import pandas as pd

from plw.io import write_parquet
from plw.mechanisms import loss_variability, weight_distance

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--cell", required=True, help='JSON {"model", "dataset", "plw", "seed"[, "completion_weight"]}')
parser.add_argument("--base-model", required=True, help="the base model's directory or Hub id")
parser.add_argument("--revision", help="Hub revision of a Hub base model")
parser.add_argument("--model", required=True, help="the fine-tuned model's directory")
parser.add_argument("--train-log", required=True)
parser.add_argument("--minkowski-p", type=float, required=True)
parser.add_argument("--output", required=True)
args = parser.parse_args()

base = args.base_model
if not Path(base).is_dir():  # a Hub model: its files in the cache that prefetch_model filled
    from huggingface_hub import snapshot_download

    base = snapshot_download(base, revision=args.revision, local_files_only=True)
row = {**json.loads(args.cell), **loss_variability(pd.read_parquet(args.train_log)),
       **weight_distance(base, args.model, args.minkowski_p)}
write_parquet(pd.DataFrame([row]), args.output)
print(row)
