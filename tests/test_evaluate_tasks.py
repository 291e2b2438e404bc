"""The local lm-eval tasks (resources/lm_eval_tasks): the paper's WMT wrappers render the documented Alpaca
prompt, and the demo tasks load their items from any working directory with the real TaskManager."""

import json
from pathlib import Path

import pytest
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from plw.prompts import render_prompt

REPO = Path(__file__).resolve().parents[1]
TASKS_DIR = REPO / "resources" / "lm_eval_tasks"
ITEMS_DIR = REPO / "resources" / "demo" / "benchmark_items"
UPSTREAM_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks"

# task, upstream lm-eval task file it wraps, source and target language codes and names
WMT = [
    ("plw_wmt14_en_fr", "translation/wmt14_en-fr.yaml", "en", "fr", "English", "French"),
    ("plw_wmt14_fr_en", "translation/wmt14_fr-en.yaml", "fr", "en", "French", "English"),
    ("plw_wmt16_en_de", "translation/wmt16_en-de.yaml", "en", "de", "English", "German"),
    ("plw_wmt16_de_en", "translation/wmt16_de-en.yaml", "de", "en", "German", "English"),
    ("plw_wmt16_en_ro", "translation/wmt16_en-ro.yaml", "en", "ro", "English", "Romanian"),
    ("plw_wmt16_ro_en", "translation/wmt16_ro-en.yaml", "ro", "en", "Romanian", "English"),
]
DEMO = {"demo_capitals": "capitals.jsonl", "demo_opposites": "opposites.jsonl",
        "demo_numbers_en_fr": "numbers_en_fr.jsonl"}
# Upstream WMT rows: {"translation": {<lang>: <sentence>, ...}}
SENTENCES = {"en": "The cat sits on the mat.", "fr": "Le chat est assis sur le tapis.",
             "de": "Die Katze sitzt auf der Matte.", "ro": "Pisica stă pe covor."}


@pytest.fixture(scope="module")
def local_tasks() -> TaskManager:
    return TaskManager(include_defaults=False, include_path=[str(TASKS_DIR)])


def wmt_task_on_local_document(task: str, source: str, target: str, tmp_path: Path):
    """The task as its YAML defines it, with only the data fields pointed at a local file in WMT's schema."""
    rows = tmp_path / "wmt.jsonl"
    rows.write_text(json.dumps({"translation": {source: SENTENCES[source], target: SENTENCES[target]}}) + "\n")
    config = load_yaml(TASKS_DIR / f"{task}.yaml")
    config.update(dataset_path="json", dataset_name=None,
                  dataset_kwargs={"data_files": {split: str(rows) for split in ("train", "validation", "test")},
                                  "cache_dir": str(tmp_path / "cache")})
    return TaskManager(include_defaults=False).load([config])["tasks"][task]


@pytest.mark.parametrize("task, upstream, source, target, source_name, target_name", WMT,
                         ids=[row[0] for row in WMT])
def test_wmt_task_renders_the_alpaca_translation_prompt(tmp_path, task, upstream, source, target, source_name,
                                                        target_name):
    wmt = wmt_task_on_local_document(task, source, target, tmp_path)
    document = next(iter(wmt.test_docs()))

    instruction = f"Translate the following from {source_name} to {target_name}"
    assert wmt.doc_to_text(document) == render_prompt(instruction, SENTENCES[source])
    assert wmt.doc_to_target(document) == SENTENCES[target]
    assert wmt.OUTPUT_TYPE == "generate_until"
    assert wmt.config.generation_kwargs["until"] == ["\n"] and wmt.config.generation_kwargs["do_sample"] is False
    assert "bleu" in wmt.aggregation()


def test_wmt_prompt_is_the_documented_text(tmp_path):
    wmt = wmt_task_on_local_document("plw_wmt14_en_fr", "en", "fr", tmp_path)
    prompt = wmt.doc_to_text(next(iter(wmt.test_docs())))
    assert prompt == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nTranslate the following from English to French\n\n"
        "### Input:\nThe cat sits on the mat.\n\n"
        "### Response:"
    )
    assert "### Instruction:\nTranslate the following from English to French\n\n" in (
        REPO / "docs" / "evaluation.md").read_text(encoding="utf-8").replace("\\n", "\n")


@pytest.mark.parametrize("task, upstream", [(row[0], row[1]) for row in WMT], ids=[row[0] for row in WMT])
def test_wmt_task_wraps_the_upstream_dataset(task, upstream):
    ours = load_yaml(TASKS_DIR / f"{task}.yaml", resolve_func=False)
    theirs = load_yaml(UPSTREAM_TASKS / upstream, resolve_func=False)
    for field in ("dataset_path", "dataset_name", "test_split", "output_type"):
        assert ours[field] == theirs[field], field


def test_every_local_task_is_registered(local_tasks):
    assert {row[0] for row in WMT} | set(DEMO) <= set(local_tasks.all_subtasks)


@pytest.mark.parametrize("task", sorted(DEMO))
def test_demo_task_loads_its_items_from_any_working_directory(local_tasks, tmp_path, monkeypatch, task):
    monkeypatch.chdir(tmp_path)
    demo = local_tasks.load([task])["tasks"][task]
    items = [json.loads(line) for line in (ITEMS_DIR / DEMO[task]).read_text().splitlines() if line.strip()]
    docs = list(demo.test_docs())
    assert docs == items


def test_demo_translation_uses_the_wmt_prompt_construction(local_tasks):
    demo = local_tasks.load(["demo_numbers_en_fr"])["tasks"]["demo_numbers_en_fr"]
    for document in demo.test_docs():
        expected = render_prompt("Translate the following from English to French", document["translation"]["en"])
        assert demo.doc_to_text(document) == expected
        assert demo.doc_to_target(document) == document["translation"]["fr"]
    assert demo.aggregation().keys() == {"bleu", "chrf"}


def test_demo_fill_in_is_scored_like_winogrande(local_tasks):
    """WinoGrande's partial scoring: each option completes the context, the rest of the sentence is scored."""
    demo = local_tasks.load(["demo_opposites"])["tasks"]["demo_opposites"]
    document = {"sentence": "The opposite of hot is _ for sure.", "option1": "rich", "option2": "cold",
                "answer": "2"}
    assert demo.doc_to_choice(document) == ["The opposite of hot is rich", "The opposite of hot is cold"]
    assert demo.doc_to_target(document) == "for sure."
    assert demo.doc_to_text(document) == 1
    assert demo.OUTPUT_TYPE == "multiple_choice" and set(demo.aggregation()) == {"acc"}


def test_demo_multiple_choice_reports_acc_and_acc_norm(local_tasks):
    demo = local_tasks.load(["demo_capitals"])["tasks"]["demo_capitals"]
    document = next(iter(demo.test_docs()))
    assert demo.doc_to_choice(document)[demo.doc_to_target(document)] in document["choices"]
    assert set(demo.aggregation()) == {"acc", "acc_norm"}
