"""Bad input, table-driven: each case gets a clear error naming the problem, before any expensive work.

Config cases run `snakemake -n` (validation happens while planning, before any job); data, task and path
cases run the real rule that must refuse them. Shell metacharacters in config strings never execute.
"""

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from workflow_runner import copy_workflow, run_snakemake

pytestmark = pytest.mark.slow  # every test runs Snakemake or a script in a subprocess

DEMO_CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())


def demo_config(**changes) -> dict:
    config = copy.deepcopy(DEMO_CONFIG)
    config.update(changes)
    return config


def with_training(**changes) -> dict:
    config = demo_config()
    config["training"] = {**config["training"], **changes}
    return config


def with_benchmark(**changes) -> dict:
    config = demo_config()
    config["benchmarks"] = {"capitals": {**config["benchmarks"]["capitals"], **changes}}
    return config


def with_dataset(spec: dict, name: str = "demo") -> dict:
    config = demo_config()
    config["datasets"] = {name: spec}
    return config


def with_model(name: str, spec: dict) -> dict:
    return demo_config(models={name: spec}, judges={}, judged_benchmarks={})  # the demo's judge is its model


def with_judged(name: str = "descriptions", judges: dict | None = None, **changes) -> dict:
    config = demo_config()
    config["judged_benchmarks"] = {name: {**config["judged_benchmarks"]["descriptions"], **changes}}
    if judges is not None:
        config["judges"] = judges
    return config


# (case id, config, pattern the error must match); each is refused while planning.
CONFIG_CASES = [
    ("plw above 1", demo_config(plw=[0, 1.5]), r"1\.5 is greater than the maximum of 1[\s\S]*instance\[.plw.\]"),
    ("plw below 0", demo_config(plw=[-0.1, 1]), r"-0\.1 is less than the minimum of 0"),
    ("plw duplicate", demo_config(plw=[0, 0.1, 0.1]), r"non-unique elements[\s\S]*instance\['plw'\]"),
    ("plw not a number", demo_config(plw=["half"]), r"'half' is not of type 'number'[\s\S]*plw"),
    ("plw empty", demo_config(plw=[]), r"should be non-empty[\s\S]*plw"),
    ("unknown top-level key", demo_config(learning_rate=1e-5), r"'learning_rate' was unexpected"),
    ("unknown training key", with_training(lr=1e-5), r"'lr' was unexpected[\s\S]*training"),
    ("negative seed", demo_config(seeds=[-1]), r"-1 is less than the minimum of 0[\s\S]*seeds"),
    ("bad loss normalization", with_training(loss_normalization="token"),
     r"'token' is not one of \['global', 'micro_batch', 'nonzero_tokens'\]"),
    ("packed attention without packing", with_training(attn_implementation="packed_sdpa", packing=False),
     r"training\.attn_implementation: packed_sdpa .*set training\.packing: true"),
    ("unknown attention", with_training(attn_implementation="fast"), r"'fast' is not one of"),
    ("bad bad_records policy", demo_config(bad_records="ignore"), r"'ignore' is not one of \['error', 'drop'\]"),
    ("model name with shell command", with_model("$(touch pwned)", {"build": "tiny_llama"}),
     r"does not match[\s\S]*models"),
    ("model with both source and build", with_model("m", {"build": "tiny_llama", "source": "x/y"}),
     r"is valid under each of|is not valid under any"),
    ("dataset name 'base' (reserved for base-model rows)", with_dataset({"path": "x.json"}, name="base"),
     r"should not be valid under \{'const': 'base'\}"),
    ("dataset with two sources", with_dataset({"path": "x.json", "hub": "org/data"}),
     r"is valid under each of"),
    ("download without git blob", with_dataset({"url": "https://example.org/a.json"}),
     r"is not valid under any of the given schemas"),
    ("git blob not a sha1", with_dataset({"url": "https://example.org/a.json", "git_blob": "abc"}),
     r"'abc' does not match"),
    ("derivation from an unknown dataset", with_dataset({"derive": "short", "from": "nope"}, name="short"),
     r"datasets\.short\.from: unknown dataset 'nope'"),
    ("benchmark task with shell metacharacters", with_benchmark(task="arc; rm -rf ~"), r"does not match"),
    ("negative shots", with_benchmark(num_fewshot=-1), r"-1 is less than the minimum of 0"),
    ("benchmark without metric", {**demo_config(), "benchmarks": {"capitals": {"task": "demo_capitals"}}},
     r"'metric' is a required property"),
    ("batch size zero", demo_config(evaluation={"batch_size": 0}), r"0 is not valid under any|batch_size"),
    ("wp power zero", demo_config(analysis={"wp_power": 0}), r"less than or equal to the minimum of 0"),
    ("plw -0.0 (its cells would be plw--0 beside plw-0)", demo_config(plw=[-0.0, 0.1, 1]),
     r"config plw\[0\]: -0\.0; write 0"),
    ("plw NaN", demo_config(plw=[0, float("nan"), 1]), r"config plw\[1\]: nan is not a finite number"),
    ("learning rate NaN", with_training(learning_rate=float("nan")),
     r"config training\.learning_rate: nan is not a finite number"),
    ("learning rate infinite", with_training(learning_rate=float("inf")),
     r"config training\.learning_rate: inf is not a finite number"),
    ("unknown scheduler", with_training(lr_scheduler_type="cosin"), r"'cosin' is not one of \['linear', 'cosine'"),
    ("global batch not a multiple of the per-device batch",
     with_training(global_batch_size=16, per_device_batch_size=6),
     r"training\.global_batch_size 16 is not a multiple of training\.per_device_batch_size 6"),
    ("missing task directory", demo_config(evaluation={"include_path": ["no/tasks"]}),
     r"config evaluation\.include_path\[0\]: no directory 'no/tasks'"),
    ("formula naming an unknown column", demo_config(analysis={"formula": "score ~ wp + I(wp**2) + size"}),
     r"config analysis\.formula: .*size"),
    ("formula without wp squared", demo_config(analysis={"formula": "score ~ wp"}),
     r"config analysis\.formula: 'score ~ wp' lacks I\(wp \*\* 2\)"),
    ("missing dataset file", with_dataset({"path": "nowhere/data.json"}),
     r"config datasets\.demo\.path: no file 'nowhere/data\.json'"),
    ("missing model directory", with_model("m", {"source": "./no/such/model"}),
     r"config models\.m\.source: './no/such/model' is not a model directory"),
    ("dataset path with a shell command", with_dataset({"path": "x; touch pwned"}),
     r"config datasets\.demo\.path: no file 'x; touch pwned'"),
    ("judged benchmark with an unknown judge", with_judged(judge="gpt-4"),
     r"config judged_benchmarks\.descriptions\.judge: unknown judge 'gpt-4'; known: demo-judge"),
    ("judged benchmark named like an lm-eval benchmark", with_judged(name="capitals"),
     r"config judged_benchmarks\.capitals: also a name in benchmarks"),
    ("judge of an unknown model", with_judged(judges={"demo-judge": {"model": "llama", "format": "pandalm"}}),
     r"config judges\.demo-judge\.model: unknown model 'llama'; known: tiny-llama"),
    ("judge with an unknown format", with_judged(judges={"demo-judge": {"model": "tiny-llama", "format": "gpt4"}}),
     r"'gpt4' is not one of \['alpaca_eval_clf', 'pandalm'\]"),
    ("missing judged benchmark file", with_judged(data={"path": "no/judged.json"}),
     r"config judged_benchmarks\.descriptions\.data\.path: no file 'no/judged\.json'"),
    ("missing judge directory", with_judged(judges={"demo-judge": {"source": "./no/judge", "format": "pandalm"}}),
     r"config judges\.demo-judge\.source: './no/judge' is not a model directory"),
]


@pytest.fixture(scope="module")
def planning_copy(tmp_path_factory):
    """One workflow copy for all planning cases (dry runs write nothing)."""
    return copy_workflow(tmp_path_factory.mktemp("bad_input") / "workflow")


@pytest.mark.parametrize("case, config, pattern", CONFIG_CASES, ids=[case[0] for case in CONFIG_CASES])
def test_bad_config_is_refused_while_planning(planning_copy, case, config, pattern):
    config_file = planning_copy / f"bad-{re.sub(r'[^a-z]+', '-', case)}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = run_snakemake(planning_copy, "-n", "--configfile", str(config_file), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{case}: planning succeeded\n{output[-2000:]}"
    assert re.search(pattern, output), f"{case}: error does not match {pattern!r}:\n{output[-3000:]}"
    assert not (planning_copy / "pwned").exists()
    assert not (planning_copy / "results").exists(), "planning must not write results"


# ---- cases refused by the job that meets them, before any training ------------------------------------------

def bad_records_config(records) -> tuple[dict, dict]:
    """A demo config whose dataset file holds `records` (written by the test)."""
    return with_dataset({"path": "bad.json"}), {"bad.json": json.dumps(records)}


GOOD = {"instruction": "Say hi.", "input": "", "output": "hi"}
# (case id, config, files to write in the workflow copy, target, pattern the error must match)
RUN_CASES = [
    ("record not an object", *bad_records_config([GOOD, "just a string"]), "results/data/demo.parquet",
     r"dataset demo: bad\.json: record 1: not an object"),
    ("record missing output", *bad_records_config([GOOD, GOOD, {"instruction": "x"}]), "results/data/demo.parquet",
     r"record 2: missing output"),
    ("record missing instruction", *bad_records_config([{"output": "x"}]), "results/data/demo.parquet",
     r"record 0: missing instruction"),
    ("record with a non-string field", *bad_records_config([GOOD, {**GOOD, "input": 3}]),
     "results/data/demo.parquet", r"record 1: non-string input"),
    ("dataset without records", *bad_records_config([]), "results/data/demo.parquet",
     r"dataset demo: bad\.json: no records"),
    ("dataset file that is not UTF-8", with_dataset({"path": "bad.json"}), {"bad.json": b'[{"instruction": "\xff"}]'},
     "results/data/demo.parquet", r"bad\.json: line 1 \(byte 18\) is not valid UTF-8"),
    ("dataset file is not JSON", with_dataset({"path": "bad.json"}), {"bad.json": "[{"},
     "results/data/demo.parquet", r"bad\.json: not valid JSON"),
    # the whole sweep as target: the prefetch jobs come first, so no training starts
    ("unknown benchmark task", with_benchmark(task="demo_capitalz"), {}, "results/scores.parquet",
     r"benchmark capitals: unknown lm-eval task 'demo_capitalz'; did you mean demo_capitals"),
    ("model source with a shell command", with_model("m", {"source": "$(touch pwned)"}), {},
     "results/tables/dataset_stats.md", r"\$\(touch pwned\)"),
    ("model directory without a tokenizer", with_model("m", {"source": "./m"}), {"m/config.json": "{}"},
     "results/tables/dataset_stats.md", r"config models\.m\.source: './m' has no tokenizer \(none of tokenizer\.json"),
]


@pytest.mark.parametrize("case, config, files, target, pattern", RUN_CASES, ids=[case[0] for case in RUN_CASES])
def test_bad_input_is_refused_by_the_first_job_that_meets_it(workflow_copy, case, config, files, target, pattern):
    for name, content in files.items():
        path = workflow_copy / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    (workflow_copy / "config" / "bad.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(workflow_copy, target, "--cores", "1", "--configfile", "config/bad.yaml", check=False)
    logs = "".join(path.read_text(errors="replace") for path in (workflow_copy / "results").rglob("*.log")) \
        if (workflow_copy / "results").exists() else ""
    output = result.stdout + result.stderr + logs
    assert result.returncode != 0, f"{case}: the run succeeded"
    assert re.search(pattern, output), f"{case}: error does not match {pattern!r}:\n{output[-3000:]}"
    assert not (workflow_copy / target).exists()
    assert not list(workflow_copy.rglob("pwned")), f"{case}: a config string ran as a shell command"
    assert not list((workflow_copy / "results").glob("models/*")) if (workflow_copy / "results").exists() else True


def test_a_duplicate_yaml_key_is_refused_with_its_line(planning_copy):
    text = (planning_copy / "config" / "config.yaml").read_text()
    assert "\nseeds: [42]\n" in text
    config_file = planning_copy / "config" / "duplicate.yaml"
    config_file.write_text(text.replace("\nseeds: [42]\n", "\nseeds: [42]\nseeds: [7]\n"))
    line = text.split("\nseeds: [42]\n")[0].count("\n") + 3  # the second "seeds:"
    result = run_snakemake(planning_copy, "-n", "--configfile", str(config_file), check=False)
    assert result.returncode != 0
    assert f"duplicate.yaml: line {line}: key 'seeds' is given twice" in result.stdout + result.stderr


def test_a_missing_dataset_file_is_refused_even_when_its_results_exist(workflow_copy):
    """With its output on disk Snakemake would find nothing to do and keep the results of the old file."""
    prepared = workflow_copy / "results" / "data" / "demo.parquet"
    prepared.parent.mkdir(parents=True)
    prepared.write_bytes(b"made from the old file")
    (workflow_copy / "config" / "typo.yaml").write_text(yaml.safe_dump(
        with_dataset({"path": "resources/demo/alpaca_dmeo.json"})))
    result = run_snakemake(workflow_copy, "results/data/demo.parquet", "--cores", "1", "--configfile",
                           "config/typo.yaml", check=False)
    assert result.returncode != 0
    assert "config datasets.demo.path: no file 'resources/demo/alpaca_dmeo.json'" in result.stdout + result.stderr
    assert prepared.read_bytes() == b"made from the old file"


def test_bad_records_can_be_dropped_with_counts_in_the_log(workflow_copy):
    config, files = bad_records_config([GOOD, "x", {"instruction": "y"}, {**GOOD, "output": ""}, GOOD])
    config["bad_records"] = "drop"
    (workflow_copy / "bad.json").write_text(files["bad.json"])
    (workflow_copy / "config" / "bad.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(workflow_copy, "results/data/demo.parquet", "--cores", "1", "--configfile", "config/bad.yaml")
    import pandas as pd

    assert len(pd.read_parquet(workflow_copy / "results" / "data" / "demo.parquet")) == 3
    log = (workflow_copy / "results" / "logs" / "prepare_dataset" / "demo.log").read_text()
    for line in ("dropped 1 records: missing output", "dropped 1 records: not an object",
                 "3 records from bad.json, 1 with an empty completion"):
        assert line in log


def test_a_dataset_whose_records_are_all_dropped_is_refused(workflow_copy):
    config, files = bad_records_config(["x", {"instruction": "y"}])
    config["bad_records"] = "drop"
    (workflow_copy / "bad.json").write_text(files["bad.json"])
    (workflow_copy / "config" / "bad.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(workflow_copy, "results/data/demo.parquet", "--cores", "1", "--configfile",
                           "config/bad.yaml", check=False)
    log = (workflow_copy / "results" / "logs" / "prepare_dataset" / "demo.log").read_text()
    assert result.returncode != 0
    assert "dataset demo: bad.json: no records left after dropping the bad ones" in log
    assert not (workflow_copy / "results" / "data" / "demo.parquet").exists()


def test_hf_token_never_reaches_a_log(workflow_copy):
    secret = "hf_SECRETtoken1234567890"
    run_snakemake(workflow_copy, "--cores", "1", "--printshellcmds", "results/tables/dataset_stats.md",
                  env={"HF_TOKEN": secret})
    for path in [*(workflow_copy / "results").rglob("*"), *(workflow_copy / ".snakemake").rglob("*.log")]:
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


def test_trust_remote_code_is_off_unless_the_config_turns_it_on_for_one_model(planning_copy):
    config = yaml.safe_load((planning_copy / "config" / "paper.yaml").read_text())
    config["models"]["llama2-7b"]["trust_remote_code"] = True
    (planning_copy / "config" / "trusting.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(planning_copy, "-n", "--printshellcmds", "--configfile", "config/trusting.yaml")
    commands = [line for line in result.stdout.splitlines() if "scripts/evaluate.py" in line]
    assert commands
    for command in commands:
        trusting = "--trust-remote-code" in command
        assert trusting == ("--model-path results/models/llama2-7b/" in command
                            or "--model-path meta-llama/Llama-2-7b-hf" in command), command


def test_every_scheduler_the_schema_allows_is_one_of_transformers():
    from transformers.trainer_utils import SchedulerType

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow" / "schemas" /
                             "config.schema.yaml").read_text())
    allowed = schema["properties"]["training"]["properties"]["lr_scheduler_type"]["enum"]
    assert "cosine" in allowed and set(allowed) <= {scheduler.value for scheduler in SchedulerType}
