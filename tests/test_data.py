"""The data stage: Short derivation, verified downloads, record normalization, column mapping, Table 1 and the
paper's planned grid.

Units run on hand-made records with a word-count tokenizer (so every expected number can be checked by hand);
the download, column mapping and planning cases run the real Snakemake CLI on a copy of the workflow.
Bad config values and the end-to-end refusal of bad records are in test_bad_input.py.
"""

import copy
import functools
import http.server
import json
import math
import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from plw.download import git_blob_id, verify_blob
from plw.grid import cell_row, cells, eval_result, format_plw, typed_cell
from plw.records import COLUMNS, BadRecordError, empty_completions, normalize, read_records
from plw.short import NO_INPUT_INSTRUCTION, derive_short
from plw.stats import dataset_stats, to_markdown, token_counts
from workflow_runner import REPO, copy_workflow, job_counts, run_snakemake

EMPTY_BLOB = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # `git hash-object /dev/null`
DEMO_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def count_words(texts: list[str]) -> list[int]:
    """A tokenizer whose token counts are easy to check by hand: one token per whitespace-separated word."""
    return [len(text.split()) for text in texts]


def table(rows: list[dict]) -> pd.DataFrame:
    """Records in the normalized schema (string columns id, instruction, input, output), as normalize makes them."""
    return pd.DataFrame(rows, columns=list(COLUMNS), dtype="string")


def config_with_datasets(datasets: dict, **changes) -> dict:
    config = copy.deepcopy(DEMO_CONFIG)
    config["datasets"] = datasets
    config.update(changes)
    return config


@pytest.fixture
def data_workflow(tmp_path) -> Path:
    return copy_workflow(tmp_path / "workflow")


def run_logs(workdir: Path) -> str:
    results = workdir / "results"
    return "".join(path.read_text(errors="replace") for path in results.rglob("*.log")) if results.exists() else ""


# ---- 1. AlpacaDataShort derivation ----------------------------------------------------------------------------

def test_short_swaps_exactly_the_records_whose_completion_is_longer_than_the_prompt():
    records = table([
        # prompt 2 + 2 = 4 words < completion 5: swapped, the original input becomes the context
        {"id": "with-input", "instruction": "Summarize this", "input": "short text",
         "output": "one two three four five"},
        # prompt 2 < completion 3, no input: swapped with the no-context instruction
        {"id": "no-input", "instruction": "Name colors", "input": "", "output": "red green blue"},
        # prompt 3 + 2 = 5 == completion 5: not longer, kept
        {"id": "equal", "instruction": "Add two numbers", "input": "2 3", "output": "the sum is five total"},
        # prompt 5 > completion 1: kept
        {"id": "shorter", "instruction": "Write a long poem please", "input": "", "output": "ok"},
    ])
    original = records.copy()

    derived = derive_short(records, count_words)

    expected = table([
        {"id": "with-input",
         "instruction": "Predict the prompt that generated the below AI output given the following context. "
                        "Context: short text",
         "input": "one two three four five", "output": "Summarize this"},
        {"id": "no-input", "instruction": "Predict the prompt that generated the following AI output.",
         "input": "red green blue", "output": "Name colors"},
        {"id": "equal", "instruction": "Add two numbers", "input": "2 3", "output": "the sum is five total"},
        {"id": "shorter", "instruction": "Write a long poem please", "input": "", "output": "ok"},
    ])
    pd.testing.assert_frame_equal(derived, expected)
    pd.testing.assert_frame_equal(records, original)  # the parent dataset is not modified in place


def test_short_keeps_a_dataset_with_nothing_to_swap_unchanged():
    records = table([{"id": "0", "instruction": "Give the opposite of the word.", "input": "heavy",
                      "output": "light"}])
    pd.testing.assert_frame_equal(derive_short(records, count_words), records)


def test_short_swaps_only_no_input_records_when_no_record_with_input_is_longer():
    # the with-input assignment then gets an empty selection: it must not fail or touch other rows
    records = table([{"id": "0", "instruction": "a", "input": "", "output": "b c"},
                     {"id": "1", "instruction": "a b", "input": "c", "output": "d"}])
    derived = derive_short(records, count_words)
    assert derived["instruction"].tolist() == [NO_INPUT_INSTRUCTION, "a b"]
    assert derived["input"].tolist() == ["b c", "c"]
    assert derived["output"].tolist() == ["a", "d"]


# ---- 2. git blob ids ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b"hello\n", b'[{"instruction": "x", "output": "y"}]', bytes(range(256))],
                         ids=["empty", "text", "json", "binary"])
@pytest.mark.slow
def test_git_blob_id_matches_git_hash_object(content):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    expected = subprocess.run([git, "hash-object", "--stdin"], input=content, capture_output=True,
                              check=True).stdout.decode().strip()
    assert git_blob_id(content) == expected


def test_git_blob_id_of_empty_content_is_gits_empty_blob():
    assert git_blob_id(b"") == EMPTY_BLOB


def test_verify_blob_accepts_the_right_bytes_and_rejects_one_changed_byte():
    content = b'[{"instruction": "Say hi.", "input": "", "output": "hi"}]\n'
    expected = git_blob_id(content)
    verify_blob(content, expected, "https://example.org/alpaca.json")  # no error

    changed = content.replace(b"hi", b"ho", 1)
    actual = git_blob_id(changed)
    with pytest.raises(ValueError) as error:
        verify_blob(changed, expected, "https://example.org/alpaca.json")
    message = str(error.value)
    assert "https://example.org/alpaca.json" in message
    assert expected in message and actual in message


def test_verify_blob_rejects_a_truncated_file():
    content = b"0123456789"
    with pytest.raises(ValueError, match=git_blob_id(content[:-1])):
        verify_blob(content[:-1], git_blob_id(content), "source")


# ---- 3. the download rule, against a local HTTP server --------------------------------------------------------

ALPACA_RECORDS = [
    {"instruction": "Give the opposite of the word.", "input": "heavy", "output": "light"},
    {"instruction": "Name a primary color.", "input": "", "output": "Red."},
    {"instruction": "Sort the numbers in ascending order.", "input": "42, 20, 23", "output": "20, 23, 42"},
]
# the server is on 127.0.0.1: never route it through a proxy from the environment
NO_PROXY = {"no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def alpaca_server(tmp_path_factory):
    """A local HTTP server with alpaca.json (3 records); yields (url, the file's bytes)."""
    root = tmp_path_factory.mktemp("http")
    content = json.dumps(ALPACA_RECORDS, indent=1).encode()
    (root / "alpaca.json").write_bytes(content)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alpaca.json", content
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.slow
def test_download_rule_verifies_the_git_blob_and_normalizes_the_file(data_workflow, alpaca_server):
    url, content = alpaca_server
    config = config_with_datasets({"web": {"url": url, "git_blob": git_blob_id(content)}})
    (data_workflow / "config" / "test.yaml").write_text(yaml.safe_dump(config))

    run_snakemake(data_workflow, "results/data/web.parquet", "--cores", "1", "--configfile", "config/test.yaml",
                  env=NO_PROXY)

    assert (data_workflow / "results" / "downloads" / "web.json").read_bytes() == content
    data = pd.read_parquet(data_workflow / "results" / "data" / "web.parquet")
    assert list(data.columns) == list(COLUMNS)
    assert all(pd.api.types.is_string_dtype(data[column]) for column in COLUMNS)
    assert data.to_dict("records") == [{"id": str(index), **record} for index, record in enumerate(ALPACA_RECORDS)]
    assert "verified" in (data_workflow / "results" / "logs" / "download_dataset" / "web.log").read_text()


@pytest.mark.slow
def test_download_rule_refuses_a_file_whose_git_blob_differs(data_workflow, alpaca_server):
    url, content = alpaca_server
    wrong = git_blob_id(content + b"\n")  # e.g. the configured commit had one more line
    config = config_with_datasets({"web_bad": {"url": url, "git_blob": wrong}})
    (data_workflow / "config" / "test.yaml").write_text(yaml.safe_dump(config))

    result = run_snakemake(data_workflow, "results/data/web_bad.parquet", "--cores", "1",
                           "--configfile", "config/test.yaml", check=False, env=NO_PROXY)

    output = result.stdout + result.stderr + run_logs(data_workflow)
    assert result.returncode != 0, output[-3000:]
    assert wrong in output and git_blob_id(content) in output, output[-3000:]
    assert url in output
    # neither the unverified download (nor its temporary file) nor the dataset is left behind
    downloads = data_workflow / "results" / "downloads"
    assert not (list(downloads.iterdir()) if downloads.exists() else [])
    assert not (data_workflow / "results" / "data" / "web_bad.parquet").exists()


# ---- 4. bad records, unit by unit -----------------------------------------------------------------------------

GOOD = {"instruction": "Say hi.", "input": "", "output": "hi"}
# (bad record, reason); each reason that `problem` can give
BAD_RECORDS = [
    ("just a string", "not an object"),
    (["Say hi.", "", "hi"], "not an object"),
    ({"input": "", "output": "hi"}, "missing instruction"),
    ({"instruction": None, "output": "hi"}, "missing instruction"),
    ({"instruction": "Say hi.", "input": ""}, "missing output"),
    ({"instruction": 3, "output": "hi"}, "non-string instruction"),
    ({**GOOD, "input": ["a"]}, "non-string input"),
    ({**GOOD, "output": {"text": "hi"}}, "non-string output"),
]


@pytest.mark.parametrize("record, reason", BAD_RECORDS, ids=[f"{reason}-{i}" for i, (_, reason) in
                                                               enumerate(BAD_RECORDS)])
def test_a_bad_record_stops_normalization_naming_source_index_and_reason(record, reason):
    with pytest.raises(BadRecordError) as error:
        normalize([GOOD, GOOD, record, GOOD], source="alpaca.json")
    message = str(error.value)
    assert message.startswith(f"alpaca.json: record 2: {reason} ")
    assert "bad_records: drop" in message  # tells the user how to go on


def test_dropping_bad_records_counts_them_per_reason_and_keeps_source_indices_as_ids():
    records = [GOOD] + [record for record, _ in BAD_RECORDS] + [{**GOOD, "output": "hello"}]

    data, bad = normalize(records, drop_bad=True)

    assert bad == Counter(reason for _, reason in BAD_RECORDS)
    assert bad["not an object"] == 2
    # the ids are the records' indices in the source, so a dropped record leaves a gap
    pd.testing.assert_frame_equal(data, table([{"id": "0", **GOOD},
                                               {"id": str(len(records) - 1), **GOOD, "output": "hello"}]))


def test_an_empty_completion_is_a_valid_record_and_is_counted():
    """Alpaca trains on its 28 records with an empty output (the completion is the EOS token alone)."""
    records = [GOOD, {**GOOD, "output": ""}, {**GOOD, "output": " \n\t"}, GOOD]
    data, bad = normalize(records)
    assert not bad
    assert data["output"].tolist() == ["hi", "", " \n\t", "hi"]
    assert empty_completions(data) == 2


def test_valid_records_normalize_missing_input_to_empty_and_keep_given_ids():
    data, bad = normalize([{"instruction": "a", "output": "b"},
                           {"instruction": "c", "input": None, "output": "d", "id": 7},
                           {"instruction": "e", "input": "f", "output": "g", "id": "x-1"}])
    assert not bad
    pd.testing.assert_frame_equal(data, table([{"id": "0", "instruction": "a", "input": "", "output": "b"},
                                               {"id": "7", "instruction": "c", "input": "", "output": "d"},
                                               {"id": "x-1", "instruction": "e", "input": "f", "output": "g"}]))


def test_normalizing_only_bad_records_with_drop_gives_an_empty_table_with_the_schema():
    data, bad = normalize(["x", {"instruction": "y"}], drop_bad=True)
    assert bad == Counter({"not an object": 1, "missing output": 1})
    assert list(data.columns) == list(COLUMNS) and len(data) == 0


# ---- 5. column mapping ----------------------------------------------------------------------------------------

OTHER_NAMES = {"id": "uid", "instruction": "prompt", "input": "context", "output": "response"}
MAPPED_ROWS = [
    {"uid": "q1", "prompt": "Give the opposite of the word.", "context": "heavy", "response": "light"},
    {"uid": "q2", "prompt": "Name a primary color.", "context": "", "response": "Red."},
]
MAPPED_EXPECTED = table([
    {"id": "q1", "instruction": "Give the opposite of the word.", "input": "heavy", "output": "light"},
    {"id": "q2", "instruction": "Name a primary color.", "input": "", "output": "Red."},
])


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "\n")  # a trailing blank line is allowed


def write_parquet(rows: list[dict], path: Path) -> None:
    pd.DataFrame(rows).to_parquet(path, index=False)


@pytest.mark.parametrize("write, suffix", [(write_jsonl, ".jsonl"), (write_parquet, ".parquet")],
                         ids=["jsonl", "parquet"])
def test_columns_option_maps_other_column_names(tmp_path, write, suffix):
    path = tmp_path / f"data{suffix}"
    write(MAPPED_ROWS, path)
    data, bad = normalize(read_records(path), columns=OTHER_NAMES)
    assert not bad
    pd.testing.assert_frame_equal(data, MAPPED_EXPECTED)


def test_columns_option_may_map_only_some_columns(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl([{"instruction": "Say hi.", "response": "hi"}], path)
    data, _ = normalize(read_records(path), columns={"output": "response"})
    pd.testing.assert_frame_equal(data, table([{"id": "0", **GOOD}]))


def test_a_mapped_column_that_is_absent_is_reported_under_its_normalized_name(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl([{"instruction": "Say hi.", "output": "hi"}], path)  # no "response" column
    with pytest.raises(BadRecordError, match=r"record 0: missing output"):
        normalize(read_records(path), columns={"output": "response"})


def test_parquet_with_a_null_input_normalizes_it_to_empty(tmp_path):
    path = tmp_path / "data.parquet"
    write_parquet([{"instruction": "Say hi.", "input": None, "output": "hi"},
                   {"instruction": "Say yo.", "input": "x", "output": "yo"}], path)
    data, bad = normalize(read_records(path))
    assert not bad
    assert data["input"].tolist() == ["", "x"]


@pytest.mark.slow
def test_prepare_rule_maps_the_columns_of_a_local_parquet_file(data_workflow):
    write_parquet(MAPPED_ROWS, data_workflow / "mapped.parquet")
    config = config_with_datasets({"mapped": {"path": "mapped.parquet", "columns": OTHER_NAMES}})
    (data_workflow / "config" / "test.yaml").write_text(yaml.safe_dump(config))

    run_snakemake(data_workflow, "results/data/mapped.parquet", "--cores", "1", "--configfile", "config/test.yaml")

    data = pd.read_parquet(data_workflow / "results" / "data" / "mapped.parquet")
    assert all(pd.api.types.is_string_dtype(data[column]) for column in data.columns)
    pd.testing.assert_frame_equal(data.astype("string"), MAPPED_EXPECTED)


# ---- 6. Table 1 numbers ---------------------------------------------------------------------------------------

def test_table_1_statistics_match_hand_computed_values():
    records = table([
        {"id": "0", "instruction": "a b", "input": "", "output": "x y z"},
        {"id": "1", "instruction": "a b c d", "input": "p", "output": "x y z x y z"},
        {"id": "2", "instruction": "a b c d e f", "input": "p q", "output": "x y z x y z x y z"},
    ])
    counts = token_counts(records, count_words)
    assert counts.to_dict("list") == {"instruction": [2, 4, 6], "input": [0, 1, 2], "output": [3, 6, 9],
                                      "instruction_characters": [3, 7, 11], "input_characters": [0, 1, 3],
                                      "output_characters": [5, 11, 17], "empty_completion": [False, False, False]}

    stats = dataset_stats(counts)

    # The code reports the SAMPLE standard deviation (ddof=1, pandas' default for Series.std), e.g. for the
    # instruction counts sqrt(((2-4)**2 + 0 + (6-4)**2) / (3-1)) = 2, not the population value sqrt(8/3).
    assert stats == pytest.approx({
        "records": 3, "empty_completions": 0,
        "instruction_mean": 4.0, "instruction_sd": 2.0,
        "input_mean": 1.0, "input_sd": 1.0,
        "completion_mean": 6.0, "completion_sd": 3.0,
        "total_tokens": 12 + 3 + 18,             # prompt (instruction + input) + completion
        "completion_prompt_ratio": 18 / 15,      # ratio of totals, not a mean of per-record ratios
        "completion_prompt_character_ratio": 33 / 25,
    })
    assert stats["instruction_sd"] == pytest.approx(pd.Series([2, 4, 6]).std())
    assert stats["instruction_sd"] != pytest.approx(np.std([2, 4, 6]))  # numpy's default is ddof=0
    assert isinstance(stats["total_tokens"], int)


def test_table_1_counts_empty_completions_and_prints_means_and_sds_as_the_paper_does():
    records = table([
        {"id": "0", "instruction": "a b", "input": "", "output": ""},
        {"id": "1", "instruction": "a b c d", "input": "p", "output": "x y z x y z"},
        {"id": "2", "instruction": "a b c", "input": "p q", "output": " "},
    ])
    stats = dataset_stats(token_counts(records, count_words))
    assert stats["empty_completions"] == 2 and stats["completion_mean"] == 2.0
    markdown = to_markdown(pd.DataFrame([{"model": "m", "dataset": "d", **stats}]))
    row = markdown.splitlines()[-1]
    # instruction 2, 4, 3 tokens: mean 3.00, sd 1.00; input 0, 1, 2: 1.00 (1.00); completion 0, 6, 0: 2.00 (3.46)
    # characters: completion 0 + 11 + 1, prompt 3 + 7 + 5 + 1 + 3
    assert row == "| m | d | 3 | 2 | 3.00 (1.00) | 1.00 (1.00) | 2.00 (3.46) | 18 | 0.500 | 0.632 |"


def test_table_1_standard_deviation_of_a_single_record_is_undefined():
    counts = token_counts(table([{"id": "0", "instruction": "a b", "input": "c", "output": "d"}]), count_words)
    stats = dataset_stats(counts)
    assert stats["records"] == 1 and stats["instruction_mean"] == 2.0
    assert math.isnan(stats["instruction_sd"]) and math.isnan(stats["completion_sd"])
    assert stats["completion_prompt_ratio"] == pytest.approx(1 / 3)


# ---- 7. the planned grid --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planning_copy(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("data_plan") / "workflow")


@pytest.mark.slow
def test_paper_plan_has_60_trainings_and_480_evaluations(planning_copy):
    result = run_snakemake(planning_copy, "-n", "--forceall", "--configfile", "config/paper.yaml")
    plan = result.stdout + result.stderr
    counts = job_counts(plan)
    assert counts["train"] == 2 * 3 * 10 * 1           # models x datasets x PLW values x seeds
    assert counts["evaluate"] == 60 * 8                 # x benchmarks
    assert counts["evaluate_base"] == 2 * 8
    # the two downloads, normalized; AlpacaDataShort derived once per model tokenizer
    assert counts["download_dataset"] == 2 and counts["prepare_dataset"] == 2 and counts["derive_short"] == 2
    assert "build_base_model" not in counts
    # PLW values are spelled as in the config in every path
    assert "plw-0.0005/" in plan and "plw-0.002236/" in plan and "e-0" not in plan


@pytest.mark.slow
def test_demo_plan_builds_its_data_without_downloads(planning_copy):
    result = run_snakemake(planning_copy, "-n", "--forceall")
    counts = job_counts(result.stdout + result.stderr)
    assert counts["train"] == 1 * 2 * 3 * 1
    assert counts["prepare_dataset"] == 1 and counts["derive_short"] == 1 and counts["build_base_model"] == 1
    assert "download_dataset" not in counts
    assert not (planning_copy / "results").exists(), "a dry run must not write results"


# ---- 8. PLW spelling in paths ---------------------------------------------------------------------------------

@pytest.mark.parametrize("plw, text", [
    (0.0005, "0.0005"), (5e-4, "0.0005"), (1, "1"), (1.0, "1"), (0, "0"), (0.0, "0"), (0.002236, "0.002236"),
    (0.1, "0.1"), (0.02463, "0.02463"), (0.2463, "0.2463"), (1e-5, "0.00001"), (np.float64(0.5), "0.5"),
])
def test_format_plw_writes_plain_decimals(plw, text):
    assert format_plw(plw) == text


def test_format_plw_round_trips_every_paper_value():
    plws = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["plw"]
    texts = [format_plw(plw) for plw in plws]
    assert len(set(texts)) == len(plws)
    assert all(float(text) == float(plw) and "e" not in text.lower() for text, plw in zip(texts, plws))


def test_a_grid_of_several_completion_weights_keeps_the_paths_of_weight_1_and_spells_the_others():
    grid = dict(results="results", models=["m"], datasets=["d"], plws=["0", "0.1"], seeds=["42"], benchmarks=["b"])
    paths_without_the_axis = {eval_result(grid, "b", **cell) for cell in cells(grid)}
    with_axis = list(cells({**grid, "completion_weights": [1, 0.5]}))
    assert {eval_result(grid, "b", **cell) for cell in with_axis} == paths_without_the_axis | {
        "results/eval/m/d/plw-0_cw-0.5/seed-42/b.parquet", "results/eval/m/d/plw-0.1_cw-0.5/seed-42/b.parquet"}
    paper, other = with_axis[1], with_axis[3]  # plw 0.1 at weights 1 and 0.5
    # the scripts' --cell of a weight-1 cell reads as before the axis existed (its jobs' parameters unchanged)
    assert typed_cell(paper) == dict(model="m", dataset="d", plw=0.1, seed=42)
    assert typed_cell(other) == dict(model="m", dataset="d", plw=0.1, seed=42, completion_weight=0.5)
    assert cell_row(paper)["completion_weight"] == 1.0 and cell_row(other)["completion_weight"] == 0.5
