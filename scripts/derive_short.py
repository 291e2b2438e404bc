"""Derive an AlpacaDataShort-style dataset with the model's tokenizer (token lengths depend on it)."""

import argparse
import json

import pandas as pd

from plw.io import write_parquet
from plw.short import derive_short
from plw.tokenize import load_tokenizer, token_counter

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--input", required=True)
parser.add_argument("--tokenizer", required=True, help="Hub id or directory of the model")
parser.add_argument("--model-spec", default="{}", help="the model's config entry, as JSON")
parser.add_argument("--output", required=True)
args = parser.parse_args()
spec = json.loads(args.model_spec)

tokenizer = load_tokenizer(args.tokenizer, revision=spec.get("revision"),
                           trust_remote_code=spec.get("trust_remote_code", False))
records = pd.read_parquet(args.input)
derived = derive_short(records, token_counter(tokenizer))
write_parquet(derived, args.output)
swapped = int((derived["output"] != records["output"]).sum())
print(f"{swapped} of {len(records)} records swapped")
