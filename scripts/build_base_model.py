"""Build the embedded demo's base model from the demo corpus (tokenizer + tiny LLaMA, save_pretrained)."""

import argparse
import json

import pandas as pd

from plw.io import atomic_path
from plw.tiny_model import build_tiny_llama, corpus_texts

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--corpus", nargs="+", required=True, help="normalized dataset Parquet files")
parser.add_argument("--settings", required=True, help="the config's tiny_llama section, as JSON")
parser.add_argument("--output", required=True)
args = parser.parse_args()

records = pd.concat([pd.read_parquet(path) for path in args.corpus]).to_dict("records")
with atomic_path(args.output) as tmp:
    build_tiny_llama(corpus_texts(records), tmp, **json.loads(args.settings))
print(f"built {args.output} from {len(records)} records")
