"""custom_dataset loader of the demo tasks: item files under resources/demo/benchmark_items, found relative to
this file so the tasks work from any working directory (the workflow's root, a test's temporary copy)."""

import json
from pathlib import Path

ITEMS_DIR = Path(__file__).resolve().parents[1] / "demo" / "benchmark_items"


def load_items(file: str, split: str = "test", **_metadata):
    """A DatasetDict with one split holding the records of a JSONL item file."""
    import datasets

    path = ITEMS_DIR / file
    if not path.is_file():
        raise FileNotFoundError(f"demo benchmark items not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return datasets.DatasetDict({split: datasets.Dataset.from_list(records)})
