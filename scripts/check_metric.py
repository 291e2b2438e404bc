"""Check a benchmark's primary metric against its task (from the cache that prefetch filled): one the task
reports, and one where higher is better, since the regression looks for the PLW that maximizes it."""

import argparse
import json
import sys

from plw.io import write_text

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--benchmark", required=True)
parser.add_argument("--task", required=True)
parser.add_argument("--metric", required=True)
parser.add_argument("--include-path", default="[]", help="JSON list of local task directories")
parser.add_argument("--output", required=True)
args = parser.parse_args()

from plw.evaluate import check_metric, load_task, task_manager  # noqa: E402

try:
    task = load_task(task_manager(json.loads(args.include_path), args.task), args.task, args.benchmark)
    check_metric(task, args.metric, args.benchmark)
except ValueError as error:
    sys.exit(f"error: {error}")
write_text(json.dumps({"benchmark": args.benchmark, "task": args.task, "metric": args.metric}), args.output)
