"""The beta mixed model (scripts/beta_regression.R, R's glmmTMB) and how the workflow plans it.

The scores are simulated from the beta model itself (tests/reference/beta: logit μ = b0 + b1·wp + b2·wp² +
u_benchmark, score ~ Beta(μφ, (1−μ)φ), 8 benchmarks on the paper's 10 PLW values), and glmmTMB's own fits of them
are committed beside them. The fits need Rscript with the R packages glmmTMB and jsonlite and are skipped, with the
reason, without them; the planning tests need no R: a PATH without Rscript stands for a machine without R.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import chi2

from plw.analysis import collect_scores, critical_weight
from plw.config_checks import beta_model_unavailable
from plw.evaluate import ROW_COLUMNS, ROW_TYPES
from workflow_runner import REPO, copy_workflow, job_counts, run_snakemake

POWER = 0.30103  # log10(2), the paper's wp exponent
PLW_GRID = [0, 0.0005, 0.002236, 0.01, 0.02463, 0.05, 0.1, 0.2463, 0.5, 1]
TERMS = ["Intercept", "wp", "I(wp ** 2)"]  # as the linear model's table names them
TRUTH = {"Intercept": -0.3, "wp": 1.5, "I(wp ** 2)": -1.25}  # vertex at wp = 0.6: λ = 0.6 ** (1 / POWER) ≈ 0.18
BETA_REFERENCE = REPO / "tests" / "reference" / "beta"
SCORES = pd.read_csv(BETA_REFERENCE / "beta_scores.csv")  # made by make_beta_scores.py
# glmmTMB's fits of SCORES, made without scripts/beta_regression.R (glmmtmb_reference.R)
GLMMTMB = json.loads((BETA_REFERENCE / "glmmtmb_reference.json").read_text())["datasets"]


@pytest.fixture(scope="session")
def r_with_glmmtmb():
    """Skips, saying why, where the beta model cannot be fitted (R is asked once, as the workflow asks it)."""
    reason = beta_model_unavailable()
    if reason:
        pytest.skip(f"needs Rscript with the R packages glmmTMB and jsonlite (Debian: r-cran-glmmtmb "
                    f"r-cran-jsonlite): {reason}")


needs_r = pytest.mark.usefixtures("r_with_glmmtmb")


def squeezed_by_hand(scores: pd.Series) -> pd.Series:
    """Smithson & Verkuilen (2006), as the R script squeezes a fit's scores when one of them is 0 or 1."""
    return (scores * (len(scores) - 1) + 0.5) / len(scores)


def run_beta_regression(scores: pd.DataFrame, directory: Path) -> tuple[pd.DataFrame, str]:
    """The R script on a CSV of primary scores, as the rule runs it; its JSON table as a DataFrame, and its Markdown."""
    scores.to_csv(directory / "scores.csv", index=False)
    command = ["Rscript", "scripts/beta_regression.R", "--wp-power", str(POWER),
               "--scores", str(directory / "scores.csv"), "--table", str(directory / "table.json"),
               "--markdown", str(directory / "table.md")]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    table = pd.DataFrame(json.loads((directory / "table.json").read_text()))  # as the rule reads it
    return table, (directory / "table.md").read_text()


@pytest.fixture(scope="module")
def beta_fits(tmp_path_factory, r_with_glmmtmb) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """One run of the R script on the reference scores and three datasets made from them (loading R and glmmTMB
    takes most of its time)."""
    edges = SCORES[SCORES["dataset"] == "edges"]
    quadratic = SCORES[SCORES["dataset"] == "quadratic"]
    scores = pd.concat([
        SCORES,
        edges.assign(dataset="edges_by_hand", score=squeezed_by_hand(edges["score"])),
        quadratic[quadratic["plw"].isin([0, 1])].assign(dataset="two_plws"),
        quadratic.assign(dataset="percent", score=quadratic["score"] * 100),  # not fractions
    ], ignore_index=True)
    table, markdown = run_beta_regression(scores, tmp_path_factory.mktemp("beta"))
    return table, markdown, scores


def fit_of(table: pd.DataFrame, dataset: str, model: str = "pooled") -> pd.DataFrame:
    return table[(table["dataset"] == dataset) & (table["model"] == model)].set_index("term", drop=False)


# --- the fit ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_r
def test_beta_fit_recovers_known_coefficients_within_two_standard_errors(beta_fits):
    table, _, _ = beta_fits
    for dataset, model in [("quadratic", "pooled"), ("two_models", "pooled"), ("two_models", "m1"),
                           ("two_models", "m2")]:
        fit = fit_of(table, dataset, model)
        assert list(fit["term"]) == TERMS
        for term, truth in TRUTH.items():
            estimate, stderr = fit.loc[term, ["estimate", "stderr"]]
            assert abs(estimate - truth) < 2 * stderr, f"{dataset}, {model}, {term}: {estimate:.4f} ± {stderr:.4f}"
    first = fit_of(table, "quadratic").iloc[0]
    assert first["n_observations"] == len(PLW_GRID) * 8
    assert first["note"] == "" and not first["squeezed"]
    assert 0.05 < first["benchmark_variance"] < 0.5  # the truth is 0.16, on the logit scale
    assert 25 < first["precision"] < 100  # φ = 50


@pytest.mark.slow
@needs_r
@pytest.mark.parametrize("dataset", sorted(GLMMTMB))
def test_the_table_holds_glmmtmbs_own_fit_and_anovas_lrt(beta_fits, dataset):
    table, _, _ = beta_fits
    for model, reference in GLMMTMB[dataset].items():
        fit = fit_of(table, dataset, model)
        first = fit.iloc[0]
        assert list(fit["term"]) == reference["terms"]
        for column in ("estimate", "stderr", "p_value"):
            assert fit[column].to_numpy() == pytest.approx(reference[column], rel=1e-5), (model, column)
        for column in ("benchmark_variance", "precision", "loglik", "null_loglik", "lrt_statistic", "lrt_p_value"):
            assert first[column] == pytest.approx(reference[column], rel=1e-5), (model, column)
        assert (first["lrt_df"], first["n_observations"], first["squeezed"]) == (
            reference["lrt_df"], reference["n_observations"], reference["squeezed"])


@pytest.mark.slow
@needs_r
def test_critical_weight_is_the_vertex_of_the_linear_predictor_within_the_trained_grid(beta_fits):
    table, _, _ = beta_fits
    for dataset, models in GLMMTMB.items():
        data = SCORES[SCORES["dataset"] == dataset]
        for model in models:
            fit = fit_of(table, dataset, model)
            # the linear model's rule on the beta fit's coefficients (the logit is monotone: the same maximum)
            expected = critical_weight(fit.loc["wp", "estimate"], fit.loc["I(wp ** 2)", "estimate"], POWER,
                                       (data["wp"].min(), data["wp"].max()))
            assert (fit["critical_plw"].iloc[0], fit["critical_kind"].iloc[0]) == (
                pytest.approx(expected[0]), expected[1]), (dataset, model)
    quadratic = fit_of(table, "quadratic").iloc[0]
    assert quadratic["critical_kind"] == "vertex" and 0.1 < quadratic["critical_plw"] < 0.4  # the truth is 0.18
    # rising over PLW 0.01-0.5: the highest trained PLW, flagged as a grid end
    rising = fit_of(table, "rising").iloc[0]
    assert (rising["critical_plw"], rising["critical_kind"]) == (pytest.approx(0.5), "grid end")


@pytest.mark.slow
@needs_r
def test_lrt_against_the_intercept_only_model_rejects_a_real_effect_and_not_a_flat_one(beta_fits):
    table, _, _ = beta_fits
    fits = table[table["term"].notna()].groupby(["dataset", "model"]).first()
    assert (fits["lrt_df"] == 2).all()
    assert np.isfinite(fits["lrt_statistic"]).all() and (fits["lrt_statistic"] >= 0).all()
    assert fits["lrt_statistic"].to_numpy() == pytest.approx(2 * (fits["loglik"] - fits["null_loglik"]).to_numpy())
    assert fits["lrt_p_value"].to_numpy() == pytest.approx(chi2.sf(fits["lrt_statistic"], 2), rel=1e-9)
    assert fits.loc[("quadratic", "pooled"), "lrt_p_value"] < 0.01
    assert fits.loc[("flat", "pooled"), "lrt_p_value"] > 0.05


@pytest.mark.slow
@needs_r
def test_every_dataset_is_fitted_pooled_over_models_and_per_model(beta_fits):
    table, markdown, _ = beta_fits
    two = table[table["dataset"] == "two_models"]
    assert two.groupby("model", sort=False)["term"].apply(list).to_dict() == {
        "pooled": TERMS, "m1": TERMS, "m2": TERMS}
    observations = two.groupby("model")["n_observations"].first()
    assert observations["pooled"] == observations["m1"] + observations["m2"] == 2 * len(PLW_GRID) * 8
    # the pooled fits of every dataset first, then the per-model ones, as in the linear model's table
    scopes = table[["dataset", "model"]].drop_duplicates()
    assert list(scopes["model"] == "pooled") == sorted(scopes["model"] == "pooled", reverse=True)
    assert "| two_models | m2 | I(wp ** 2) |" in markdown


@pytest.mark.slow
@needs_r
def test_scores_of_0_or_1_are_squeezed_as_smithson_and_verkuilen(beta_fits):
    table, markdown, scores = beta_fits
    fit, by_hand = fit_of(table, "edges"), fit_of(table, "edges_by_hand")
    assert fit["squeezed"].all() and not by_hand["squeezed"].any()
    assert scores.loc[scores["dataset"] == "edges_by_hand", "score"].between(0, 1, inclusive="neither").all()
    # the R script's squeeze is the formula applied by hand: the same data, the same fit
    assert fit["estimate"].to_numpy() == pytest.approx(by_hand["estimate"].to_numpy(), rel=1e-6)
    assert fit["loglik"].iloc[0] == pytest.approx(by_hand["loglik"].iloc[0], rel=1e-8)
    assert np.isfinite(fit[["estimate", "stderr", "lrt_statistic"]]).all(axis=None)
    assert "- edges, pooled: a score of 0 or 1, so all 80 scores were squeezed into (0, 1)" in markdown
    assert not table.loc[table["dataset"] == "quadratic", "squeezed"].any()


@pytest.mark.slow
@needs_r
def test_a_scope_the_beta_model_cannot_fit_is_reported_not_fatal(beta_fits):
    table, markdown, _ = beta_fits
    for dataset, note in [
            ("two_plws", "not estimable: a quadratic in wp needs at least 3 PLW values; this scope has 2"),
            ("percent", "not estimable: 80 of 80 scores lie outside [0, 1]; the beta model needs fractions")]:
        rows = table[table["dataset"] == dataset]
        assert len(rows) == 2 and rows["term"].isna().all(), rows  # pooled and m1, one row each
        assert (rows["note"] == note).all(), rows["note"].tolist()
        assert f"| {dataset} | pooled | | | | | | | | | {note} |" in markdown


# --- the rule ----------------------------------------------------------------------------------------------


def result_frame(cell: dict, benchmark: str, metric: str, value: float) -> pd.DataFrame:
    """One evaluation's tidy rows, as plw.evaluate.result_rows writes them."""
    row = {**cell, "benchmark": benchmark, "task": f"demo_{benchmark}", "metric": metric, "value": value,
           "stderr": None, "num_fewshot": 0, "n_samples": 100, "lm_eval_version": "test", "gpus": 0}
    return pd.DataFrame([row], columns=ROW_COLUMNS).astype(ROW_TYPES)


@pytest.mark.slow
@needs_r
def test_the_rule_fits_the_primary_scores_as_fractions_and_writes_parquet_and_markdown(tmp_path):
    """scores.parquet as collect_scores writes it (BLEU on 0-100, one evaluation missing) through the rule's command:
    Python's CSV, R's fit, Python's Parquet."""
    workdir = copy_workflow(tmp_path / "workflow")
    simulated = SCORES[SCORES["dataset"] == "quadratic"]
    primary = {f"bench{index}": "bleu" if index % 2 == 0 else "acc" for index in range(8)}
    lost = (0.5, "bench3")
    frames = [result_frame(dict(model=row.model, dataset=row.dataset, plw=row.plw, seed=row.seed), row.benchmark,
                           primary[row.benchmark], row.score * 100 if primary[row.benchmark] == "bleu" else row.score)
              for row in simulated.itertuples() if (row.plw, row.benchmark) != lost]
    expected = simulated[["model", "dataset", "plw", "seed", "benchmark"]]
    scores = collect_scores(frames, expected, primary, POWER)
    assert (scores["status"] == "missing").sum() == 1
    (workdir / "results").mkdir()
    scores.to_parquet(workdir / "results" / "scores.parquet")

    run_snakemake(workdir, "results/tables/beta_regression.md", "--cores", "1", "--allowed-rules", "beta_regression")
    tables = workdir / "results" / "tables"
    table = pd.read_parquet(tables / "beta_regression.parquet")
    markdown = (tables / "beta_regression.md").read_text()
    assert table[["dataset", "model", "term"]].values.tolist() == [["quadratic", scope, term]
                                                                     for scope in ("pooled", "m1") for term in TERMS]
    assert (table["n_observations"] == len(simulated) - 1).all()  # the missing evaluation is left out
    assert table["note"].eq("").all(), table["note"]  # BLEU / 100: no score outside [0, 1]
    assert table["critical_plw"].dtype == "float64" and table["lrt_df"].dtype == "int64"
    assert table["estimate"].notna().all() and markdown.startswith("# Beta mixed-effects regression")
    assert f"| quadratic | pooled | wp | {table['estimate'].iloc[1]:.4f} |" in markdown
    assert sorted(path.name for path in tables.iterdir()) == ["beta_regression.md", "beta_regression.parquet"]


# --- planning, with and without R ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planning(tmp_path_factory) -> Path:
    """A workflow copy with the demo config for each analysis.beta_model."""
    workdir = copy_workflow(tmp_path_factory.mktemp("beta_plan") / "workflow")
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for setting in ("auto", True, False):
        config = {**demo, "analysis": {**demo.get("analysis", {}), "beta_model": setting}}
        (workdir / "config" / f"beta_{str(setting).lower()}.yaml").write_text(yaml.safe_dump(config))
    return workdir


@pytest.fixture(scope="module")
def path_without_r(tmp_path_factory) -> str:
    """PATH as it is, less Rscript: every other program of PATH linked into one folder."""
    if (Path(sys.executable).parent / "Rscript").exists():
        pytest.skip("Rscript lies beside this Python, which the workflow puts first on PATH")
    folder = tmp_path_factory.mktemp("bin_without_r")
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if entry.name not in ("Rscript", "R") and not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry.path)
    return str(folder)


def plan(workdir: Path, setting: str, path: str | None = None, check: bool = True):
    env = {"PATH": path} if path else None
    return run_snakemake(workdir, "-n", "--configfile", f"config/beta_{setting}.yaml", env=env, check=check)


@pytest.mark.slow
def test_without_r_auto_plans_the_workflow_without_the_beta_rule_and_says_why(planning, path_without_r):
    result = plan(planning, "auto", path_without_r)
    counts = job_counts(result.stdout)
    assert "beta_regression" not in counts and counts["fit_regression"] == 1 and counts["all"] == 1
    assert "beta_regression.md" not in result.stdout
    assert ("The beta regression is left out: no Rscript on PATH (analysis.beta_model: auto)."
            in result.stderr), result.stderr[-2000:]


@pytest.mark.slow
def test_without_r_true_refuses_to_plan_with_a_clear_message(planning, path_without_r):
    result = plan(planning, "true", path_without_r, check=False)
    assert result.returncode != 0
    assert ("config analysis.beta_model is true, but the beta model cannot be fitted here: no Rscript on PATH. "
            "Install R with glmmTMB and jsonlite") in result.stdout + result.stderr, result.stderr[-2000:]
    assert "Job stats" not in result.stdout


@pytest.mark.slow
def test_false_plans_no_beta_rule_and_asks_no_r(planning, tmp_path):
    spy = tmp_path / "bin"
    spy.mkdir()
    (spy / "Rscript").write_text(f"#!/bin/sh\ntouch '{tmp_path / 'asked'}'\necho missing:\n")
    (spy / "Rscript").chmod(0o755)
    result = plan(planning, "false", f"{spy}{os.pathsep}{os.environ['PATH']}")
    counts = job_counts(result.stdout)
    assert "beta_regression" not in counts and counts["fit_regression"] == 1
    assert not (tmp_path / "asked").exists(), "analysis.beta_model false must not start R"
    assert "beta regression is left out" not in result.stderr  # false is a choice, not a problem to report


@pytest.mark.slow
@needs_r
def test_with_r_auto_plans_the_beta_rule_once_beside_the_linear_one(planning):
    counts = job_counts(plan(planning, "auto").stdout)
    assert counts["beta_regression"] == counts["fit_regression"] == 1
