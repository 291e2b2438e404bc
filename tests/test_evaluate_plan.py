"""The evaluation jobs Snakemake plans: the paper's grid against its Table 2, and the demo's 21 jobs."""

import json
import re
import shlex
from pathlib import Path

import pytest

from workflow_runner import copy_workflow, job_counts, run_snakemake

pytestmark = pytest.mark.slow  # every test runs Snakemake or a script in a subprocess

REPO = Path(__file__).resolve().parents[1]

# The paper's Table 2: benchmark -> (lm-eval task, shots, primary metric, split that is scored).
TABLE_2 = {
    "arc_challenge": ("arc_challenge", 25, "acc_norm", "test"),
    "piqa": ("piqa", 0, "acc_norm", "validation"),
    "truthfulqa_mc1": ("truthfulqa_mc1", 0, "acc", "validation"),
    "winogrande": ("winogrande", 5, "acc", "validation"),
    "wmt14_en_fr": ("plw_wmt14_en_fr", 0, "bleu", "test"),
    "wmt14_fr_en": ("plw_wmt14_fr_en", 0, "bleu", "test"),
    "wmt16_en_de": ("plw_wmt16_en_de", 0, "bleu", "test"),
    "wmt16_de_en": ("plw_wmt16_de_en", 0, "bleu", "test"),
}
PAPER_CELLS = 2 * 3 * 10 * 1  # models x datasets x PLW values x seeds
PAPER_MODELS = 2


def evaluation_commands(plan: str) -> list[dict]:
    """The environment and --flag values of every scripts/evaluate.py command in a `--printshellcmds` plan."""
    jobs = []
    for line in plan.splitlines():
        if "scripts/evaluate.py" not in line:
            continue
        words = shlex.split(line.removeprefix("Shell command:").strip())
        job = {"env": words[:words.index("python")]}
        for flag, value in zip(words, words[1:]):
            if flag.startswith("--") and not value.startswith("--"):
                job[flag] = value
        jobs.append(job)
    return jobs


@pytest.fixture(scope="module")
def planning_copy(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("evaluate_plan") / "workflow")


@pytest.fixture(scope="module")
def paper_plan(planning_copy) -> str:
    result = run_snakemake(planning_copy, "-n", "--printshellcmds", "--configfile", "config/paper.yaml")
    return result.stdout + result.stderr


def test_every_shell_command_of_the_paper_plan_is_short_whatever_the_grid(paper_plan):
    """The kernel refuses a command over 128 KiB: no command may grow with the grid (the analysis scripts
    enumerate it themselves, plw.grid). The paper grid's longest command stays under 8 KiB."""
    commands = [line for line in paper_plan.splitlines() if line.startswith("Shell command:")]
    assert {"scripts/collect_scores.py", "scripts/cost_table.py", "scripts/train.py"} <= {
        word for command in commands for word in command.split() if word.startswith("scripts/")}
    assert max(len(command) for command in commands) < 8 * 1024


def test_paper_plan_scores_every_cell_and_base_model_on_table_2(paper_plan):
    jobs = evaluation_commands(paper_plan)
    assert len(jobs) == (PAPER_CELLS + PAPER_MODELS) * len(TABLE_2)
    per_benchmark = {benchmark: 0 for benchmark in TABLE_2}
    for job in jobs:
        spec = json.loads(job["--spec"])
        task, shots, metric, _ = TABLE_2[job["--benchmark"]]
        assert (spec["task"], spec["num_fewshot"]) == (task, shots) and "metric" not in spec, job
        assert job["env"] == ["HF_HUB_OFFLINE=1", "HF_DATASETS_OFFLINE=1"], job  # compute nodes read the cache
        per_benchmark[job["--benchmark"]] += 1
    assert set(per_benchmark.values()) == {PAPER_CELLS + PAPER_MODELS}
    base_jobs = [job for job in jobs if json.loads(job["--cell"])["plw"] is None]
    assert len(base_jobs) == PAPER_MODELS * len(TABLE_2)
    assert all(json.loads(job["--cell"])["dataset"] is None for job in base_jobs)


def test_paper_plan_prefetches_before_the_offline_jobs(paper_plan):
    counts = job_counts(paper_plan)
    assert (counts["prefetch_model"], counts["prefetch_benchmark"], counts["check_metric"]) == (2, 8, 8)
    prefetch = "\n".join(line for line in paper_plan.splitlines() if "scripts/prefetch.py" in line)
    assert "huggyllama/llama-7b" in prefetch and "meta-llama/Llama-2-7b-hf" in prefetch
    assert all(task in prefetch for task, *_ in TABLE_2.values())
    # each primary metric is checked against its task before the analysis, not in the evaluation jobs
    checks = [line for line in paper_plan.splitlines() if "scripts/check_metric.py" in line]
    checked = {re.search(r"--benchmark (\S+)", line)[1]: re.search(r"--metric (\S+)", line)[1].strip("'")
               for line in checks}
    assert checked == {benchmark: metric for benchmark, (_, _, metric, _) in TABLE_2.items()}


def test_table_2_tasks_score_the_papers_split_and_report_its_metric():
    """Read from the task YAMLs themselves (lm-eval's and ours), without downloading any data."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    index = TaskManager(include_path=[str(REPO / "resources" / "lm_eval_tasks")]).task_index
    for benchmark, (task, shots, metric, split) in TABLE_2.items():
        config = load_yaml(index[task].yaml_path, resolve_func=False)
        scored = config.get("test_split") or config.get("validation_split")
        assert scored == split, benchmark
        assert metric in [entry["metric"] for entry in config["metric_list"]], benchmark
        if "num_fewshot" in config:  # a task that fixes its shots (TruthfulQA's built-in 6-example prompt)
            assert config["num_fewshot"] == shots, benchmark


def test_demo_plan_has_21_evaluation_jobs_and_6_judged_cells(planning_copy):
    plan = run_snakemake(planning_copy, "-n").stdout
    counts = job_counts(plan)
    assert counts["evaluate"] == 6 * 3 and counts["evaluate_base"] == 3
    assert counts["generate"] == counts["judge"] == 6 and counts["prefetch_judged_benchmark"] == 1
    assert "prefetch_judge" not in counts, "the demo's judge is its own built base model"


def test_the_later_designs_config_plans_its_grid_with_dolly_and_llama_3(planning_copy):
    plan = run_snakemake(planning_copy, "-n", "--configfile", "config/paper_v4.yaml")
    counts = job_counts(plan.stdout + plan.stderr)
    cells = 3 * 4 * 10  # LLaMA-1 7B, LLaMA-2 7B, LLaMA-3 8B x AlpacaData, Cleaned, Short, dolly-15k x 10 PLW
    assert counts["train"] == cells and counts["evaluate"] == cells * 11 and counts["evaluate_base"] == 3 * 11
    # AlpacaEval and PandaLM: each cell answers and is judged; the judges and their data are prefetched
    assert counts["generate"] == counts["judge"] == cells * 2
    assert counts["prefetch_judge"] == counts["prefetch_judged_benchmark"] == 2
    assert counts["prepare_dataset"] == 3 and counts["derive_short"] == 3


def test_several_completion_weights_are_an_axis_that_keeps_the_paths_and_settings_of_weight_1(planning_copy):
    config = planning_copy / "config" / "completion_weights.yaml"
    demo = (planning_copy / "config" / "config.yaml").read_text()
    config.write_text(demo.replace("  max_length: 128\n", "  max_length: 128\n  completion_weight: [1.0, 0.5]\n"))

    def trainings(*args) -> dict[str, str]:
        plan = run_snakemake(planning_copy, "-n", "--printshellcmds", "--forceall", *args)
        commands = [line for line in plan.stdout.splitlines() if "scripts/train.py" in line]
        return {re.search(r"--output-model (\S+)", line).group(1): line for line in commands}

    single, axis = trainings(), trainings("--configfile", str(config))
    assert len(axis) == 2 * len(single) == 12
    for model, command in single.items():  # weight 1: the same paths and the same settings as without the axis
        assert axis[model] == command and '"completion_weight": 1' in command
    others = {model: command for model, command in axis.items() if model not in single}
    assert all("/plw-" in model and "_cw-0.5/seed-42/model" in model for model in others)
    assert all('"completion_weight": 0.5' in command for command in others.values())
