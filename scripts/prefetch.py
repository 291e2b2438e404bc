"""Fill the Hugging Face cache on the login node: Hub models, Hub datasets, and the benchmarks' data.

Compute nodes often have no internet; training and evaluation jobs then run with HF_HUB_OFFLINE=1 and
HF_DATASETS_OFFLINE=1 from this cache.
"""

import argparse
import json

from plw.io import write_text

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--models", required=True, help="JSON {name: {source, revision?}} of Hub models")
parser.add_argument("--datasets", required=True, help="JSON {name: {hub, split, revision?}} of Hub datasets")
parser.add_argument("--benchmarks", required=True, help="the config's benchmarks section, as JSON")
parser.add_argument("--include-path", required=True, help="JSON list of local task directories")
parser.add_argument("--output", required=True)
args = parser.parse_args()

fetched = {"models": [], "datasets": [], "tasks": []}
models, datasets = json.loads(args.models), json.loads(args.datasets)
if models:
    from huggingface_hub import snapshot_download

    for name, spec in models.items():
        snapshot_download(spec["source"], revision=spec.get("revision"))
        fetched["models"].append(spec["source"])
if datasets:
    from datasets import load_dataset

    for name, spec in datasets.items():
        load_dataset(spec["hub"], split=spec["split"], revision=spec.get("revision"))
        fetched["datasets"].append(spec["hub"])

from lm_eval.tasks import get_task_dict  # noqa: E402  (heavy; only once the models are in)

from plw.evaluate import check_task, task_manager  # noqa: E402

manager = task_manager(json.loads(args.include_path))
benchmarks = json.loads(args.benchmarks)
for name, spec in benchmarks.items():
    check_task(manager, spec["task"], name)
get_task_dict(sorted({spec["task"] for spec in benchmarks.values()}), manager)  # downloads the task data
fetched["tasks"] = sorted({spec["task"] for spec in benchmarks.values()})
write_text(json.dumps(fetched, indent=1), args.output)
print(json.dumps(fetched, indent=1))
