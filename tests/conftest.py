"""Shared fixtures: the demo records and a tiny base model built once per test session."""

import json
from pathlib import Path

import pytest
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
