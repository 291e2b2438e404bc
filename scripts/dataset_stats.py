"""Table 1: token statistics of every training dataset in its model's tokenizer."""

import argparse
import json

import pandas as pd

from plw.io import write_parquet, write_text
from plw.stats import dataset_stats, to_markdown, token_counts
from plw.tokenize import load_tokenizer, token_counter

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--items", required=True,
                    help="JSON list of {model, dataset, path, tokenizer, revision?, trust_remote_code?}")
parser.add_argument("--parquet", required=True)
parser.add_argument("--markdown", required=True)
args = parser.parse_args()

rows, tokenizers = [], {}
for item in json.loads(args.items):
    if item["model"] not in tokenizers:
        tokenizers[item["model"]] = load_tokenizer(item["tokenizer"], revision=item.get("revision"),
                                                   trust_remote_code=item.get("trust_remote_code", False))
    counts = token_counts(pd.read_parquet(item["path"]), token_counter(tokenizers[item["model"]]))
    rows.append({"model": item["model"], "dataset": item["dataset"], **dataset_stats(counts)})
table = pd.DataFrame(rows)
write_parquet(table, args.parquet)
write_text(to_markdown(table), args.markdown)
print(to_markdown(table))
