"""Shared fixtures: the demo records, a tiny base model built once per test session, the model with its tokenizer
as training sets them up, the demo data as Parquet, and the demo's training settings."""

import json
from pathlib import Path

import pytest
import torch

from workflow_runner import copy_workflow

REPO = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO / "resources" / "demo" / "alpaca_demo.json"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def demo_records() -> list[dict]:
    return json.loads(DEMO_DATA.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, demo_records) -> Path:
    """A demo-sized LLaMA (tokenizer without pad token, like LLaMA's), lightly pre-trained on the demo data."""
    from plw.tiny_model import build_tiny_llama, corpus_texts

    texts = corpus_texts(demo_records)
    return build_tiny_llama(texts, tmp_path_factory.mktemp("tiny_llama"), pretrain_epochs=1)



@pytest.fixture
def workflow_copy(tmp_path) -> Path:
    """A private copy of the workflow, so a test's real Snakemake run writes its own results/."""
    return copy_workflow(tmp_path / "workflow")


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    """The tiny model and its tokenizer with the special tokens that training adds (a module's own copy)."""
    from transformers import AutoModelForCausalLM

    from plw.tokenize import add_missing_special_tokens, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir), model_max_length=128)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    add_missing_special_tokens(tokenizer, model)
    return model, tokenizer


@pytest.fixture(scope="session")
def demo_parquet(tmp_path_factory, demo_records):
    from plw.records import normalize

    path = tmp_path_factory.mktemp("data") / "demo.parquet"
    normalize(demo_records[:96])[0].to_parquet(path)
    return path


@pytest.fixture(scope="session")
def training_settings():
    """The demo's training section (validated, defaults filled in), cut to 12 steps of 8 records."""
    import yaml
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return {**config["training"], "max_steps": 12, "save_steps": 4, "global_batch_size": 8,
            "per_device_batch_size": 4}


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu need CUDA: skipped, with the reason, elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
