"""Score one model (a fine-tuned cell or a base model) on one benchmark; write tidy Parquet and lm-eval's JSON."""

import argparse
import json
import sys

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--model-path", required=True, help="model directory or Hub id")
parser.add_argument("--cell", required=True,
                    help='JSON {"model", "dataset", "plw", "seed"[, "completion_weight"]}; nulls for a base model')
parser.add_argument("--benchmark", required=True)
parser.add_argument("--spec", required=True, help="the benchmark's config entry (task, num_fewshot, limit?), as JSON")
parser.add_argument("--settings", required=True, help="the config's evaluation section, as JSON")
parser.add_argument("--local-model", action="store_true", help="the model is a directory, not a Hub id")
parser.add_argument("--revision", help="Hub revision of a Hub model")
parser.add_argument("--trust-remote-code", action="store_true")
parser.add_argument("--output", required=True)
parser.add_argument("--output-json", required=True)
args = parser.parse_args()
spec, settings, cell = json.loads(args.spec), json.loads(args.settings), json.loads(args.cell)

from plw.evaluate import check_backend, check_model_dir, evaluate, load_model, load_task, result_rows, task_manager  # noqa: E402
from plw.io import write_parquet, write_text  # noqa: E402

# Everything that can be wrong with the request fails here, before the model loads.
try:
    if args.local_model:
        check_model_dir(args.model_path, args.benchmark)
    check_backend(settings["backend"])
    manager = task_manager(settings["include_path"], spec["task"])
    task = load_task(manager, spec["task"], args.benchmark)
except (FileNotFoundError, ValueError, ModuleNotFoundError) as error:
    sys.exit(f"error: {error}")

model = load_model(args.model_path, backend=settings["backend"], batch_size=settings["batch_size"],
                   revision=args.revision, trust_remote_code=args.trust_remote_code)
results = evaluate(model, task, num_fewshot=spec["num_fewshot"], manager=manager, limit=spec.get("limit"),
                   log_samples=settings["log_samples"], bootstrap_iters=settings["bootstrap_iters"])
rows = result_rows(results, spec["task"], cell, args.benchmark)
write_text(json.dumps(results, indent=1, default=str), args.output_json)
write_parquet(rows, args.output)
print(rows.to_string())
