"""A judge's verdicts on one cell's answers to a judged benchmark against its reference outputs, and the win rate as
an evaluation result (the rows of an lm-eval result: metric win_rate, its standard error), so the analysis reads it
like any benchmark's score."""

import argparse
import json

import pandas as pd

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--cell", required=True, help='JSON {"model", "dataset", "plw", "seed"[, "completion_weight"]}')
parser.add_argument("--benchmark", required=True, help="the judged benchmark's name")
parser.add_argument("--generations", required=True, help="the cell's answers (scripts/generate.py)")
parser.add_argument("--judge", required=True, help="the judge: a model directory or Hub id")
parser.add_argument("--judge-name", required=True, help="its name in the config's judges")
parser.add_argument("--format", required=True, help="the judge's prompt format (plw.judge.JUDGE_FORMATS)")
parser.add_argument("--revision", help="Hub revision of a Hub judge")
parser.add_argument("--trust-remote-code", action="store_true")
parser.add_argument("--verdicts", required=True, help="Parquet: one verdict per item")
parser.add_argument("--output", required=True, help="Parquet: the win rate, as evaluation rows")
args = parser.parse_args()
cell = json.loads(args.cell)

import importlib.metadata  # noqa: E402

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from plw.evaluate import ROW_COLUMNS, ROW_TYPES  # noqa: E402
from plw.io import write_parquet  # noqa: E402
from plw.judge import judge_prompts, preference, verdict_logprobs, win_rate  # noqa: E402
from plw.provenance import code_version  # noqa: E402
from plw.tokenize import load_tokenizer  # noqa: E402

items = judge_prompts(pd.read_parquet(args.generations), args.format)  # fails on a bad format before the judge loads
gpus = torch.cuda.device_count()
tokenizer = load_tokenizer(args.judge, revision=args.revision, trust_remote_code=args.trust_remote_code)
judge = AutoModelForCausalLM.from_pretrained(args.judge, revision=args.revision, dtype="auto",
                                             trust_remote_code=args.trust_remote_code,
                                             device_map="auto" if gpus else None).eval()

verdicts = []
for item in items.itertuples(index=False):
    logprobs = verdict_logprobs(judge, tokenizer, item.prompt, args.format)
    verdicts.append({**{f"logprob_{word}": value for word, value in logprobs.items()},
                     "preference": preference(logprobs, args.format, item.swapped)})
verdicts = items.drop(columns="prompt").join(pd.DataFrame(verdicts, index=items.index))
verdicts["judge"] = args.judge_name
summary = win_rate(verdicts["preference"])

row = {**cell, "benchmark": args.benchmark, "task": f"judged by {args.judge_name} ({args.format})",
       "metric": "win_rate", "value": summary["win_rate"], "stderr": summary["win_rate_stderr"], "num_fewshot": 0,
       "n_samples": summary["n_total"], "lm_eval_version": f"alpaca_eval {importlib.metadata.version('alpaca_eval')}",
       "gpus": gpus, **code_version()}  # device_map="auto" spreads the judge over every visible GPU
write_parquet(verdicts, args.verdicts)
write_parquet(pd.DataFrame([row], columns=ROW_COLUMNS).astype(ROW_TYPES), args.output)
print(json.dumps(summary))
print(f"first prompt as the judge read it (swapped: {items['swapped'].iloc[0]}):\n{items['prompt'].iloc[0]}")
