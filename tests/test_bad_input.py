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
    return demo_config(models={name: spec})


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
     r"'token' is not one of \['global', 'micro_batch'\]"),
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
