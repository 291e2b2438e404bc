"""Score one model (a fine-tuned cell or a base model) on one benchmark; write tidy Parquet and lm-eval's JSON."""

import argparse
import json
import sys
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--model-path", required=True, help="model directory or Hub id")
parser.add_argument("--cell", required=True, help='JSON {"model", "dataset", "plw", "seed"}; nulls for a base model')
parser.add_argument("--benchmark", required=True)
parser.add_argument("--spec", required=True, help="the benchmark's config entry, as JSON")
parser.add_argument("--settings", required=True, help="the config's evaluation section, as JSON")
parser.add_argument("--local-model", action="store_true", help="the model is a directory, not a Hub id")
parser.add_argument("--trust-remote-code", action="store_true")
parser.add_argument("--output", required=True)
parser.add_argument("--output-json", required=True)
args = parser.parse_args()
spec, settings, cell = json.loads(args.spec), json.loads(args.settings), json.loads(args.cell)

if args.local_model and not (Path(args.model_path) / "config.json").exists():
    sys.exit(f"benchmark {args.benchmark}: no model at {args.model_path} (missing config.json)")

from plw.evaluate import check_task, evaluate, result_rows, task_manager  # noqa: E402  (after the cheap checks)
from plw.io import write_parquet, write_text  # noqa: E402

manager = task_manager(settings["include_path"])
check_task(manager, spec["task"], args.benchmark)
results = evaluate(args.model_path, spec["task"], num_fewshot=spec["num_fewshot"], manager=manager,
                   batch_size=settings["batch_size"], limit=spec.get("limit"), log_samples=settings["log_samples"],
                   backend=settings["backend"], bootstrap_iters=settings["bootstrap_iters"],
                   trust_remote_code=args.trust_remote_code)
rows = result_rows(results, spec["task"], cell, args.benchmark)
if spec["metric"] not in set(rows["metric"]):
    sys.exit(f"benchmark {args.benchmark}: task {spec['task']} reports no metric {spec['metric']!r}; "
             f"it reports {', '.join(sorted(set(rows['metric'])))}")
write_text(json.dumps(results, indent=1, default=str), args.output_json)
write_parquet(rows, args.output)
print(rows.to_string())
