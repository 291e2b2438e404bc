"""The study's real inputs through the workflow's data rules: AlpacaData as pinned in config/paper.yaml, and the
LLaMA tokenizer in a tiny random LLaMA's directory.

The files come from ../shared/data (see its README); without them these tests skip and say why. They check the
paper's own numbers: 52,002 records, 28 with an empty completion, and Table 1's AlpacaData row.
"""

import gzip
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from workflow_runner import REPO, copy_workflow, run_snakemake

SHARED_DATA = REPO.parent / "shared" / "data"
ALPACA = SHARED_DATA / "alpaca_data.json.gz"
LLAMA_TOKENIZER = SHARED_DATA / "llama_tokenizer.model"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (ALPACA.is_file() and LLAMA_TOKENIZER.is_file()),
                       reason=f"the study's real inputs are not in {SHARED_DATA} (see the README of shared/data)"),
]


def build_llama_with_real_tokenizer(directory: Path) -> Path:
    """A tiny random LlamaForCausalLM whose directory carries the LLaMA SentencePiece model, set up to add BOS
    as the Hub's LLaMA tokenizers do (loaded from the .model file alone, Transformers adds none)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source = directory / "sentencepiece"
    source.mkdir(parents=True)
    shutil.copy(LLAMA_TOKENIZER, source / "tokenizer.model")
    tokenizer = AutoTokenizer.from_pretrained(source, add_bos_token=True)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, bos_token_id=1, eos_token_id=2)
    model_dir = directory / "llama"
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def real_data_run(tmp_path_factory):
    """The data rules of config/paper.yaml on the real AlpacaData, through the download-and-verify rule (a file://
    URL with the pinned git blob), with AlpacaDataShort derived from it (AlpacaDataCleaned is not in shared/)."""
    root = tmp_path_factory.mktemp("real_inputs")
    alpaca_json = root / "alpaca_data.json"
    with gzip.open(ALPACA) as compressed, alpaca_json.open("wb") as plain:
        shutil.copyfileobj(compressed, plain)
    workdir = copy_workflow(root / "workflow")
    config = yaml.safe_load((workdir / "config" / "paper.yaml").read_text())
    model_dir = build_llama_with_real_tokenizer(root)
    (workdir / "llama_model").symlink_to(model_dir)  # found beside results/ by the tests below
    config["models"] = {"llama": {"source": str(model_dir)}}
    config["datasets"] = {
        "alpaca": {"url": alpaca_json.as_uri(), "git_blob": config["datasets"]["alpaca"]["git_blob"]},
        "alpaca_short": {"derive": "short", "from": "alpaca"},
    }
    (workdir / "config" / "real.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "results/tables/dataset_stats.md", "--cores", "2", "--configfile", "config/real.yaml")
    return workdir / "results"


def test_the_pinned_alpaca_data_verifies_and_normalizes_every_record(real_data_run):
    data = pd.read_parquet(real_data_run / "data" / "alpaca.parquet")
    assert len(data) == 52_002
    assert int((data["output"] == "").sum()) == 28
    log = (real_data_run / "logs" / "prepare_dataset" / "alpaca.log").read_text()
    assert "52002 records" in log and "28 with an empty completion" in log
    assert "3779ddbc040543ab1834ef216c983d6fcc06cc9a verified" in \
        (real_data_run / "logs" / "download_dataset" / "alpaca.log").read_text()


def test_table_1_reproduces_the_papers_alpaca_data_row(real_data_run):
    table = pd.read_parquet(real_data_run / "tables" / "dataset_stats.parquet").set_index("dataset")
    alpaca = table.loc["alpaca"]
    assert alpaca["records"] == 52_002 and alpaca["empty_completions"] == 28
    assert alpaca["total_tokens"] == 4_376_482
    markdown = (real_data_run / "tables" / "dataset_stats.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| llama | alpaca |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2:8] == ["52,002", "28", "13.40 (4.97)", "6.25 (14.38)", "64.51 (64.85)", "4,376,482"]
    # the paper prints 3.27: the ratio in characters, not in tokens (docs/table1.md)
    assert cells[8:] == ["3.284", "3.269"]


def test_short_swaps_every_record_whose_completion_is_longer_in_llama_tokens(real_data_run):
    from plw.tokenize import load_tokenizer, token_counter

    original = pd.read_parquet(real_data_run / "data" / "alpaca.parquet")
    short = pd.read_parquet(real_data_run / "data" / "llama" / "alpaca_short.parquet")
    assert short["id"].tolist() == original["id"].tolist()
    count = token_counter(load_tokenizer(str(real_data_run.parent / "llama_model")))
    longer = (pd.Series(count(original["output"].tolist()))
              > pd.Series(count(original["instruction"].tolist())) + pd.Series(count(original["input"].tolist())))
    swapped = short["output"] != original["output"]
    assert swapped.tolist() == longer.tolist()
    assert (short.loc[swapped, "output"] == original.loc[swapped, "instruction"]).all()
    assert f"{int(longer.sum())} of 52002 records swapped" in \
        (real_data_run / "logs" / "derive_short" / "llama" / "alpaca_short.log").read_text()
