"""One cell's memorization: corpus BLEU of its greedy completions of its first N training prompts against their
training completions."""

import argparse
import json

import pandas as pd

from plw.generate import greedy_completions
from plw.io import write_parquet
from plw.mechanisms import memorization_bleu

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--cell", required=True, help='JSON {"model", "dataset", "plw", "seed"[, "completion_weight"]}')
parser.add_argument("--model", required=True, help="the fine-tuned model's directory")
parser.add_argument("--data", required=True, help="the cell's training data (Parquet)")
parser.add_argument("--records", type=int, required=True, help="N: the first N training records")
parser.add_argument("--max-new-tokens", type=int, required=True)
parser.add_argument("--output", required=True)
args = parser.parse_args()

records = pd.read_parquet(args.data).head(args.records).to_dict("records")
completions = greedy_completions(args.model, records, args.max_new_tokens)
row = {**json.loads(args.cell), "memorization_bleu": memorization_bleu(completions, [r["output"] for r in records]),
       "memorization_prompts": len(records)}
write_parquet(pd.DataFrame([row]), args.output)
print(row)
for record, completion in list(zip(records, completions))[:3]:
    print(f"--- {record['instruction']!r}\n    trained: {record['output']!r}\n    generated: {completion!r}")
