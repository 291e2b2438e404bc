"""Fill the Hugging Face cache on the login node: Hub models and the benchmarks' data.

Compute nodes often have no internet; training and evaluation jobs then run with HF_HUB_OFFLINE=1 and
HF_DATASETS_OFFLINE=1 from this cache. The workflow runs it once per Hub model and once per benchmark.
"""

import argparse
import json
import sys

from plw.io import write_text

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--models", default="{}", help="JSON {name: {source, revision?}} of Hub models")
parser.add_argument("--benchmarks", default="{}", help="JSON {name: {task}} of benchmarks")
parser.add_argument("--include-path", default="[]", help="JSON list of local task directories")
parser.add_argument("--output", required=True)
args = parser.parse_args()

fetched = {"models": [], "tasks": []}
models, benchmarks, include_path = json.loads(args.models), json.loads(args.benchmarks), json.loads(args.include_path)

# Task names first: a typo fails in seconds, not after a download.
if benchmarks:
    from plw.evaluate import UnknownTaskError, check_task, load_task, task_manager

managers = {}
for name, spec in benchmarks.items():
    managers[name] = task_manager(include_path, spec["task"])
    try:
        check_task(managers[name], spec["task"], name)
    except UnknownTaskError as error:
        sys.exit(f"error: {error}")

if models:
    from huggingface_hub import HfApi, snapshot_download

    for name, spec in models.items():
        try:
            files = HfApi().list_repo_files(spec["source"], revision=spec.get("revision"))
        except Exception as error:  # noqa: BLE001  (a network, authentication or name error, all fatal here)
            sys.exit(f"error: model {name}: source {spec['source']!r} is no local directory (write a relative one "
                     f"as ./{spec['source']}) and could not be listed on the Hub: {type(error).__name__}: {error}")
        # Only one copy of the weights: safetensors where the repository has them.
        skip = ["*.msgpack", "*.h5", "*.ot", "*.onnx", "original/*"]
        if any(file.endswith(".safetensors") for file in files):
            skip += ["*.bin", "*.pth", "*.pt"]
        snapshot_download(spec["source"], revision=spec.get("revision"), ignore_patterns=skip)
        fetched["models"].append(spec["source"])

for name, spec in benchmarks.items():
    load_task(managers[name], spec["task"], name)  # builds the task as a job will: downloads its data
    fetched["tasks"].append(spec["task"])
write_text(json.dumps(fetched, indent=1), args.output)
print(json.dumps(fetched, indent=1))
