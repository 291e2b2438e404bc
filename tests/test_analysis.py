"""The analysis package: score collection, the mixed-effects regression, the critical weight, and the figures.

Scores are synthetic (a known quadratic in wp plus benchmark intercepts and noise), built into evaluation
frames shaped like plw.evaluate.result_rows and collected with collect_scores, as the workflow does. The fits
are compared with R's lme4 on the tables in tests/reference (see its README.md).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from plw.analysis import (
    FormulaError,
    check_formula,
    code_section,
    collect_scores,
    critical_weight,
    fit_mixed,
    fit_summary,
    missing_cells,
    primary_scores,
    regression_markdown,
    regression_table,
)
from plw.evaluate import ROW_COLUMNS, ROW_TYPES
from plw.figures import aggregate_figure, benchmark_figure

POWER = 0.30103  # log10(2), the paper's wp exponent
FORMULA = "score ~ wp + I(wp**2)"  # the default analysis.formula of the config schema
PLW_GRID = [0, 0.0005, 0.002236, 0.01, 0.02463, 0.05, 0.1, 0.2463, 0.5, 1]
TRUE_COEFFICIENTS = {"Intercept": 0.5, "wp": 0.3, "I(wp ** 2)": -0.25}
REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "reference"
# lme4's fits of the score tables in tests/reference (made by make_datasets.py, fitted by lme4_reference.R)
LME4 = json.loads((REFERENCE / "lme4_reference.json").read_text())["datasets"]


def result_frame(cell: dict, benchmark: str, values: dict[str, float]) -> pd.DataFrame:
    """One evaluation's tidy rows, with the columns and types that plw.evaluate.result_rows writes."""
    rows = [{**cell, "benchmark": benchmark, "task": f"demo_{benchmark}", "metric": metric, "value": value,
             "stderr": None, "num_fewshot": 0, "n_samples": 100, "lm_eval_version": "test", "gpus": 0}
            for metric, value in values.items()]
    return pd.DataFrame(rows, columns=ROW_COLUMNS).astype(ROW_TYPES)


def expected_frame(cells: list[dict], benchmarks: list[str]) -> pd.DataFrame:
    """Like plw.grid.expected_evaluations once collect_scores.py has dropped the path column."""
    return pd.DataFrame([{**cell, "benchmark": benchmark} for cell in cells for benchmark in benchmarks])


def synthetic_scores(*, models=("m1",), datasets=("d1",), seeds=(1,), n_benchmarks=8, slope=0.3, curvature=-0.25,
                     noise=0.01, base_models=False, drop=(), not_finite=(), seed=0, completion_weights=(1,)):
    """Scores from score = 0.5 + slope·wp + curvature·wp² + benchmark intercept + noise, collected.

    Even-numbered benchmarks report BLEU (0-100, so collect_scores must divide by 100), the others acc; each
    evaluation also reports a secondary metric that must not be taken as primary. `drop` lists
    (cell, benchmark) pairs whose result frame is left out, as if that evaluation never finished; `not_finite`
    those whose primary metric is NaN, as lm-eval reports a metric it could not compute. A completion weight other
    than 1 scales slope and curvature by itself and is written in the cell, as plw.grid.typed_cell writes it.
    """
    rng = np.random.default_rng(seed)
    benchmarks = [f"bench{index}" for index in range(n_benchmarks)]
    primary = {name: "bleu" if index % 2 == 0 else "acc" for index, name in enumerate(benchmarks)}
    intercepts = dict(zip(benchmarks, rng.normal(0, 0.05, n_benchmarks)))
    cells = [dict(model=model, dataset=dataset, plw=float(plw), seed=seed_) | (
             {"completion_weight": float(weight)} if weight != 1 else {})
             for model in models for dataset in datasets for weight in completion_weights for plw in PLW_GRID
             for seed_ in seeds]
    frames = []
    for cell in cells:
        wp, weight = cell["plw"] ** POWER, cell.get("completion_weight", 1)
        for benchmark in benchmarks:
            score = (0.5 + weight * (slope * wp + curvature * wp ** 2) + intercepts[benchmark]
                     + rng.normal(0, noise))
            if (cell, benchmark) in drop:
                continue
            value = score * 100 if primary[benchmark] == "bleu" else score
            if (cell, benchmark) in not_finite:
                value = np.nan
            frames.append(result_frame(cell, benchmark, {primary[benchmark]: value, "secondary": 0.123}))
    if base_models:
        base_cells = [dict(model=model, dataset=None, plw=None, seed=None) for model in models]
        for cell in base_cells:
            for benchmark in benchmarks:
                score = 0.45 + intercepts[benchmark] + rng.normal(0, noise)
                value = score * 100 if primary[benchmark] == "bleu" else score
                frames.append(result_frame(cell, benchmark, {primary[benchmark]: value}))
        cells = cells + base_cells
    return collect_scores(frames, expected_frame(cells, benchmarks), primary, POWER)


# --- the critical weight ---------------------------------------------------------------------------------


def test_critical_weight_of_the_papers_fit_is_the_vertex():
    weight, kind = critical_weight(0.5414, -0.4148, POWER)
    assert kind == "vertex"
    assert weight == pytest.approx(0.242, abs=0.001)


@pytest.mark.parametrize("b1, b2, best_end", [
    (0.2, 0.1, 1.0),     # convex, and higher at wp = 1 than at wp = 0
    (-0.3, 0.1, 0.0),    # convex, and higher at wp = 0
    (0.9, -0.2, 1.0),    # concave, vertex at wp = 2.25: still rising at 1
    (-0.2, -0.3, 0.0),   # concave, vertex at wp = -0.33: falling from 0
    (0.3, 0.0, 1.0),     # a straight line is not concave
])
def test_critical_weight_without_a_vertex_in_range_is_the_better_grid_end(b1, b2, best_end):
    assert critical_weight(b1, b2, POWER) == (best_end, "grid end")


# --- collecting scores -----------------------------------------------------------------------------------


def test_percent_metrics_are_divided_by_100_into_score_and_value_keeps_the_raw_number():
    cell = dict(model="m1", dataset="d1", plw=0.1, seed=1)
    frames = [result_frame(cell, "translation", {"bleu": 31.5, "chrf": 55.0}),
              result_frame(cell, "quiz", {"acc": 0.62, "acc_norm": 0.64})]
    scores = collect_scores(frames, expected_frame([cell], ["translation", "quiz"]),
                            {"translation": "bleu", "quiz": "acc_norm"}, POWER).set_index("metric")
    assert scores.loc["bleu", "score"] == pytest.approx(0.315)
    assert scores.loc["chrf", "score"] == pytest.approx(0.55)
    assert scores.loc["bleu", "value"] == pytest.approx(31.5)
    assert scores.loc["acc", "score"] == pytest.approx(0.62)
    assert scores.loc["acc_norm", "score"] == pytest.approx(0.64)
    assert scores["primary"].astype(bool).to_dict() == {"bleu": True, "chrf": False, "acc": False, "acc_norm": True}
    assert (scores["status"] == "ok").all()
    assert scores["wp"].to_numpy() == pytest.approx(0.1 ** POWER)


def test_a_cell_without_result_is_listed_as_missing_and_left_out_of_the_fits():
    lost = (dict(model="m1", dataset="d1", plw=0.5, seed=1), "bench3")
    scores = synthetic_scores(n_benchmarks=4, base_models=True, drop=[lost])

    flagged = scores[scores["status"] == "missing"]
    assert len(flagged) == 1
    row = flagged.iloc[0]
    assert (row["model"], row["dataset"], row["plw"], row["seed"], row["benchmark"]) == ("m1", "d1", 0.5, 1, "bench3")
    assert row["metric"] == "acc"  # the benchmark's primary metric, so the row names what is missing
    assert pd.isna(row["value"]) and pd.isna(row["score"])

    # base-model evaluations (null dataset, plw and seed) that exist are found, not listed as missing
    assert missing_cells(scores).to_dict("records") == [
        dict(model="m1", dataset="d1", completion_weight=1.0, plw=0.5, seed=1, benchmark="bench3", status="missing")]

    fitted = primary_scores(scores)
    assert len(fitted) == len(PLW_GRID) * 4 - 1  # one primary row per finished evaluation, no base rows
    assert (fitted["status"] == "ok").all() and fitted["plw"].notna().all()
    assert not ((fitted["plw"] == 0.5) & (fitted["benchmark"] == "bench3")).any()

    table = regression_table(scores, FORMULA, POWER, bootstrap_samples=0)
    assert table["n_observations"].eq(len(fitted)).all()
    markdown = regression_markdown(table, missing_cells(scores), FORMULA, POWER)
    assert "## Missing cells" in markdown
    assert "| m1 | d1 | 0.5 | 1 | bench3 | missing |" in markdown


def test_each_completion_weight_of_a_grid_is_fitted_apart():
    scores = synthetic_scores(n_benchmarks=4, completion_weights=(1, 0.5))
    assert sorted(scores["completion_weight"].unique()) == [0.5, 1.0]
    table = regression_table(scores, FORMULA, POWER, bootstrap_samples=0)
    slopes = table[(table["model"] == "pooled") & (table["term"] == "wp")].set_index("dataset")["estimate"]
    assert sorted(slopes.index) == ["d1", "d1 (completion weight 0.5)"]
    assert slopes["d1"] == pytest.approx(0.3, abs=0.05)
    assert slopes["d1 (completion weight 0.5)"] == pytest.approx(0.15, abs=0.05)
    assert table["n_observations"].eq(len(PLW_GRID) * 4).all()


def test_a_primary_score_that_is_not_finite_is_listed_and_left_out_of_the_fits():
    broken = (dict(model="m1", dataset="d1", plw=0.1, seed=1), "bench1")
    scores = synthetic_scores(n_benchmarks=4, not_finite=[broken])
    assert missing_cells(scores).to_dict("records") == [
        dict(model="m1", dataset="d1", completion_weight=1.0, plw=0.1, seed=1, benchmark="bench1",
             status="not finite")]
    assert len(primary_scores(scores)) == len(PLW_GRID) * 4 - 1
    table = regression_table(scores, FORMULA, POWER, bootstrap_samples=0)
    assert table["estimate"].notna().all()
    assert "| m1 | d1 | 0.1 | 1 | bench1 | not finite |" in regression_markdown(
        table, missing_cells(scores), FORMULA, POWER)


def test_markdown_says_none_missing_when_every_evaluation_has_a_result():
    scores = synthetic_scores(n_benchmarks=3)
    table = regression_table(scores, FORMULA, POWER, bootstrap_samples=0)
    assert missing_cells(scores).empty
    assert "None: every (cell, benchmark) has a result." in regression_markdown(
        table, missing_cells(scores), FORMULA, POWER)


# --- the regression --------------------------------------------------------------------------------------


def test_fit_recovers_a_known_quadratic_and_its_lrt_rejects_no_effect():
    scores = synthetic_scores(seed=1)
    data = primary_scores(scores)
    assert len(data) == len(PLW_GRID) * 8
    # half the benchmarks are BLEU: without the /100 their scores would be near 50, not near 0.5
    assert data["score"].between(0, 1).all()

    summary = fit_summary(data, FORMULA, POWER)
    coefficients = summary["coefficients"].set_index("term")
    assert list(coefficients.index) == list(TRUE_COEFFICIENTS)
    for term, truth in TRUE_COEFFICIENTS.items():
        estimate, stderr = coefficients.loc[term, ["estimate", "stderr"]]
        assert abs(estimate - truth) < 2 * stderr, f"{term}: {estimate:.4f} ± {stderr:.4f}, truth {truth}"
    assert summary["lrt_df"] == 2
    assert np.isfinite(summary["lrt_statistic"]) and summary["lrt_statistic"] > 0
    assert summary["lrt_p_value"] < 0.01
    assert summary["n_observations"] == len(data)
    # the true vertex is wp = 0.6, λ = 0.6 ** (1 / 0.30103) ≈ 0.18; the fit's λ follows its own coefficients
    assert summary["critical_kind"] == "vertex"
    assert summary["critical_plw"] == pytest.approx(critical_weight(
        coefficients.loc["wp", "estimate"], coefficients.loc["I(wp ** 2)", "estimate"], POWER)[0])
    assert 0.1 < summary["critical_plw"] < 0.3


def test_lrt_does_not_reject_when_scores_do_not_depend_on_wp():
    scores = synthetic_scores(slope=0.0, curvature=0.0, seed=1)
    summary = fit_summary(primary_scores(scores), FORMULA, POWER)
    assert np.isfinite(summary["lrt_statistic"])  # a diverged fit would give p = 1 for any data
    assert summary["lrt_p_value"] > 0.05


def test_regression_table_has_a_pooled_fit_and_one_per_model():
    scores = synthetic_scores(models=("m1", "m2"), n_benchmarks=4, seed=2)
    table = regression_table(scores, FORMULA, POWER, bootstrap_samples=0)
    assert set(table["dataset"]) == {"d1"}
    scopes = table.groupby("model")["term"].apply(list).to_dict()
    assert scopes == {scope: list(TRUE_COEFFICIENTS) for scope in ("pooled", "m1", "m2")}
    observations = table.groupby("model")["n_observations"].first()
    assert observations["pooled"] == observations["m1"] + observations["m2"] == 2 * len(PLW_GRID) * 4
    # one seed: no bootstrap interval
    assert table["critical_plw_ci_low"].isna().all() and table["critical_plw_ci_high"].isna().all()


def test_bootstrap_interval_with_several_seeds_brackets_the_critical_weight():
    scores = synthetic_scores(seeds=(1, 2), n_benchmarks=4, seed=3)
    table = regression_table(scores, FORMULA, POWER, bootstrap_samples=10)
    fit = table.groupby("model").first().loc["m1"]
    assert fit["critical_kind"] == "vertex"
    assert fit["critical_plw_ci_low"] <= fit["critical_plw"] <= fit["critical_plw_ci_high"]
    markdown = regression_markdown(table, missing_cells(scores), FORMULA, POWER)
    assert f"[{fit['critical_plw_ci_low']:.3g}, {fit['critical_plw_ci_high']:.3g}]" in markdown


def test_critical_weight_stays_within_the_trained_grid():
    low, high = 0.01 ** POWER, 0.5 ** POWER
    # rising over the whole grid: the highest trained PLW, not 1
    assert critical_weight(0.2, 0.05, POWER, (low, high)) == (pytest.approx(0.5), "grid end")
    # a vertex below the grid (falling over it) is not extrapolated: the lowest trained PLW
    vertex = 0.1  # in wp, below low ≈ 0.25
    assert critical_weight(-2 * -0.3 * vertex, -0.3, POWER, (low, high)) == (pytest.approx(0.01), "grid end")
    # a vertex inside the grid is the critical weight
    assert critical_weight(-2 * -0.3 * 0.5, -0.3, POWER, (low, high)) == (pytest.approx(0.5 ** (1 / POWER)), "vertex")


def test_a_rising_fit_on_a_grid_without_0_and_1_reports_the_highest_trained_plw():
    scores = synthetic_scores(slope=0.2, curvature=0.05, n_benchmarks=4, seed=4)
    scores = scores[scores["plw"].between(0.01, 0.5)]
    table = regression_table(scores, FORMULA, POWER, bootstrap_samples=0)
    assert set(table["critical_kind"]) == {"grid end"}
    assert table["critical_plw"].to_numpy() == pytest.approx(0.5)


def test_markdown_flags_a_grid_end_weight():
    scores = synthetic_scores(slope=0.2, curvature=0.05, n_benchmarks=4, seed=4)  # rising and convex
    table = regression_table(scores, FORMULA, POWER, bootstrap_samples=0)
    assert set(table["critical_kind"]) == {"grid end"}
    assert set(table["critical_plw"]) == {1.0}
    assert "1 (grid end)" in regression_markdown(table, missing_cells(scores), FORMULA, POWER)


def test_a_scope_too_small_to_fit_is_reported_and_the_figures_still_render(tmp_path):
    small = synthetic_scores(n_benchmarks=3, seed=6)
    small = small[small["plw"].isin([0.0, 1.0])]  # two PLW values cannot determine a quadratic
    table = regression_table(small, FORMULA, POWER, bootstrap_samples=0)
    assert table["note"].str.startswith("not estimable: a quadratic in wp needs at least 3 PLW values").all()
    assert "not estimable" in regression_markdown(table, missing_cells(small), FORMULA, POWER)
    aggregate_figure(small, table, POWER).save(tmp_path / "aggregate.png", dpi=72, verbose=False)
    assert (tmp_path / "aggregate.png").stat().st_size > 10_000


# --- agreement with lme4 --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def python_fits() -> dict:
    """fit_summary of each reference table, by estimation: the fits are shared by the comparisons below."""
    tables = {name: pd.read_csv(REFERENCE / f"{name}.csv") for name in LME4}
    return {(name, estimation): fit_summary(table, FORMULA, POWER, estimation=estimation)
            for name, table in tables.items() for estimation in ("reml", "ml")}


@pytest.mark.parametrize("estimation", ["reml", "ml"])
@pytest.mark.parametrize("name", sorted(LME4))
def test_fit_reaches_the_optimum_that_lme4_reports(name, estimation):
    # bleu_percent: BLEU on 0-100 beside accuracies, a benchmark variance ~10^6 times the residual, on which
    # statsmodels' optimizers stop early and still report convergence
    data = pd.read_csv(REFERENCE / f"{name}.csv")
    reference = LME4[name][estimation]
    fit = fit_mixed(data, FORMULA, reml=estimation == "reml")
    assert fit.llf == pytest.approx(reference["loglik"], abs=1e-6)
    assert fit.cov_re.iloc[0, 0] == pytest.approx(reference["benchmark_variance"], rel=1e-4)
    assert fit.scale == pytest.approx(reference["residual_variance"], rel=1e-4)
    assert fit.fe_params.to_numpy() == pytest.approx(reference["estimate"], rel=1e-4)


@pytest.mark.parametrize("estimation", ["reml", "ml"])
@pytest.mark.parametrize("name", sorted(LME4))
def test_coefficients_variances_and_lrt_agree_with_lme4(python_fits, name, estimation):
    summary, reference = python_fits[name, estimation], LME4[name]
    fit = reference[estimation]
    coefficients = summary["coefficients"]
    assert list(coefficients["term"]) == fit["terms"]
    assert coefficients["estimate"].to_numpy() == pytest.approx(fit["estimate"], rel=1e-4)
    assert coefficients["stderr"].to_numpy() == pytest.approx(fit["stderr"], rel=1e-4)
    # lmer reports t without a p-value; the reference is the normal p 2·Φ(−|t|) of lme4's t, which statsmodels
    # reports too (a relative error ε in the SE is ~z²·ε in p: 58·ε at the reference's p of 1e-14)
    assert coefficients["p_value"].to_numpy() == pytest.approx(fit["p_value"], rel=1e-4)
    assert summary["estimation"] == estimation
    assert summary["benchmark_variance"] == pytest.approx(fit["benchmark_variance"], rel=1e-4)
    assert summary["residual_variance"] == pytest.approx(fit["residual_variance"], rel=1e-4)
    assert summary["loglik"] == pytest.approx(fit["loglik"], abs=1e-6)
    # the LRT compares ML fits whatever the estimation, as R's anova() refits REML fits by ML
    assert summary["ml_loglik"] == pytest.approx(reference["ml"]["loglik"], abs=1e-6)
    assert summary["null_ml_loglik"] == pytest.approx(reference["null_ml"]["loglik"], abs=1e-6)
    assert summary["lrt_statistic"] == pytest.approx(reference["lrt_statistic"], rel=1e-4)
    assert summary["lrt_df"] == reference["lrt_df"]
    assert summary["lrt_p_value"] == pytest.approx(reference["lrt_p_value"], rel=1e-4)


def test_regression_table_and_markdown_record_the_estimation_and_the_variances():
    scores = synthetic_scores(n_benchmarks=4, seed=2)
    tables = {estimation: regression_table(scores, FORMULA, POWER, bootstrap_samples=0, estimation=estimation)
              for estimation in ("reml", "ml")}
    for estimation, table in tables.items():
        assert set(table["estimation"]) == {estimation}
        assert (table[["benchmark_variance", "residual_variance"]] > 0).all(axis=None)
        assert table["loglik"].notna().all() and table["ml_loglik"].notna().all()
    reml, ml = (tables[key].iloc[0] for key in ("reml", "ml"))
    # the REML variances are larger (they allow for the fitted fixed effects); the LRT is the same ML test
    assert reml["benchmark_variance"] > ml["benchmark_variance"] and reml["stderr"] > ml["stderr"]
    assert ml["loglik"] == ml["ml_loglik"] and reml["loglik"] != reml["ml_loglik"]
    assert reml["lrt_statistic"] == pytest.approx(ml["lrt_statistic"], rel=1e-9)
    assert "restricted maximum likelihood (REML)" in regression_markdown(tables["reml"], missing_cells(scores),
                                                                         FORMULA, POWER)
    assert "fitted by maximum likelihood (ML)" in regression_markdown(tables["ml"], missing_cells(scores),
                                                                      FORMULA, POWER)


# --- the formula ---------------------------------------------------------------------------------------


def test_critical_weight_comes_from_the_terms_by_name_in_any_order():
    data = primary_scores(synthetic_scores(seed=1))
    as_in_r = fit_summary(data, "score ~ I(wp**2) + wp", POWER)  # R's order: the quadratic term first
    as_default = fit_summary(data, FORMULA, POWER)
    assert as_in_r["critical_kind"] == as_default["critical_kind"] == "vertex"
    assert as_in_r["critical_plw"] == pytest.approx(as_default["critical_plw"], rel=1e-6)


@pytest.mark.parametrize("formula, message", [
    ("score ~ wp", "lacks I(wp ** 2)"),
    ("score ~ I(wp**2)", "lacks wp"),
    ("score ~ wp + I(wp^2)", "lacks I(wp ** 2): the critical weight comes from the terms wp and I(wp**2), in any "
                             "order, of a model with an intercept (** is Python's power; ^ is XOR)"),
    ("score ~ plw + I(plw**2)", "lacks wp, I(wp ** 2)"),
    ("score ~ wp + I(wp**2) - 1", "lacks Intercept"),
    ("score ~ wp + I(wp**2) + accuracy", "accuracy"),
    ("bleu ~ wp + I(wp**2)", "bleu"),
    ("score ~ wp + I(wp**2) + (1 | benchmark)", "random intercept per benchmark"),
    ("wp + I(wp**2)", "no response"),
    ("score ~ wp + I(wp**2", "does not parse"),
])
def test_a_formula_the_regression_cannot_use_is_refused_before_any_fit(monkeypatch, formula, message):
    with pytest.raises(FormulaError, match=re.escape(message)):
        check_formula(formula)

    def no_fit(*args, **kwargs):
        raise AssertionError("a refused formula must not be fitted")

    monkeypatch.setattr("plw.analysis.fit_mixed", no_fit)
    with pytest.raises(FormulaError):
        regression_table(synthetic_scores(n_benchmarks=3), formula, POWER, bootstrap_samples=0)


def test_check_formula_accepts_other_terms_of_known_columns_and_refuses_columns_the_scores_lack():
    check_formula("score ~ wp + I(wp**2) + C(model) + np.log(plw + 1)")
    check_formula("value ~ I(wp ** 2) + wp")
    with pytest.raises(FormulaError, match="model"):
        check_formula("score ~ wp + I(wp**2) + C(model)", columns=["score", "wp", "benchmark"])


@pytest.mark.slow
def test_check_formula_imports_no_statsmodels_for_the_workflow_parse():
    code = ("import sys; from plw.analysis import check_formula; check_formula('score ~ wp + I(wp**2)'); "
            "heavy = {'statsmodels', 'scipy', 'plotnine'} & {name.split('.')[0] for name in sys.modules}; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO / "scripts", check=True)


@pytest.mark.slow
def test_fit_regression_refuses_a_bad_formula_before_writing_and_keeps_the_previous_table(tmp_path):
    scores = synthetic_scores(n_benchmarks=3)
    scores.to_parquet(tmp_path / "scores.parquet")
    previous = {tmp_path / "regression.parquet": b"previous table", tmp_path / "regression.md": b"previous md"}
    for path, content in previous.items():
        path.write_bytes(content)
    command = [sys.executable, "scripts/fit_regression.py", "--scores", str(tmp_path / "scores.parquet"),
               "--formula", "score ~ wp", "--estimation", "reml", "--wp-power", str(POWER), "--bootstrap-samples", "0",
               "--parquet", str(tmp_path / "regression.parquet"), "--markdown", str(tmp_path / "regression.md")]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "scripts")})
    assert run.returncode != 0
    assert "lacks I(wp ** 2)" in run.stderr
    assert {path: path.read_bytes() for path in previous} == previous
    assert sorted(path.name for path in tmp_path.iterdir()) == ["regression.md", "regression.parquet",
                                                                "scores.parquet"]


# --- figures ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base_models", [True, False], ids=["with-base-models", "without-base-models"])
def test_figures_render_to_png_and_pdf(tmp_path, base_models):
    scores = synthetic_scores(models=("m1", "m2"), n_benchmarks=3, base_models=base_models, seed=5)
    regression = regression_table(scores, FORMULA, POWER, bootstrap_samples=0)
    figures = {"aggregate": aggregate_figure(scores, regression, POWER), "benchmarks": benchmark_figure(scores, POWER)}
    for name, figure in figures.items():
        for fmt in ("png", "pdf"):
            path = tmp_path / f"{name}.{fmt}"
            figure.save(path, format=fmt, dpi=72, verbose=False)  # as make_figures.py saves, at a lower dpi
            content = path.read_bytes()
            assert len(content) > 10_000, f"{path.name} is only {len(content)} bytes"
            assert content.startswith(b"\x89PNG\r\n\x1a\n" if fmt == "png" else b"%PDF")


# --- fits that once broke -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_benchmarks", [3, 8])
def test_lrt_of_a_strong_effect_is_finite_and_significant(n_benchmarks):
    # seed 0 is a data set on which the null fit diverges, for the demo's 3 benchmarks and for 8
    summary = fit_summary(primary_scores(synthetic_scores(n_benchmarks=n_benchmarks, seed=0)), FORMULA, POWER)
    assert np.isfinite(summary["lrt_statistic"])
    assert summary["lrt_p_value"] < 0.01


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.ConvergenceWarning")  # BFGS's, as meant
def test_a_fit_that_bfgs_leaves_unconverged_is_taken_from_an_optimizer_that_converges():
    lost = (dict(model="m1", dataset="d1", plw=0.5, seed=1), "bench3")
    data = primary_scores(synthetic_scores(n_benchmarks=4, drop=[lost]))
    assert not smf.mixedlm("score ~ 1", data, groups=data["benchmark"]).fit(reml=False, method=["bfgs"]).converged
    assert fit_mixed(data, "score ~ 1").converged
    assert fit_summary(data, FORMULA, POWER)["note"] == ""


def test_fit_with_three_benchmarks_does_not_fail_on_a_singular_hessian():
    summary = fit_summary(primary_scores(synthetic_scores(n_benchmarks=3, seed=8)), FORMULA, POWER)
    assert summary["critical_kind"] == "vertex"


def test_collect_scores_with_no_results_lists_every_evaluation_as_missing():
    cells = [dict(model="m1", dataset="d1", plw=plw, seed=1) for plw in (0.0, 1.0)]
    scores = collect_scores([], expected_frame(cells, ["quiz"]), {"quiz": "acc"}, POWER)
    assert (scores["status"] == "missing").all() and len(missing_cells(scores)) == 2
    assert primary_scores(scores).empty


def layers_of(figure, geom: str) -> list[tuple]:
    """Each layer of one geom (e.g. geom_point) in a plotnine figure, with its data (the figure's own by default)."""
    return [(layer, figure.data if layer.geom.data is None else layer.geom.data) for layer in figure.layers
            if type(layer.geom).__name__ == geom]


def test_an_aggregate_point_with_a_missing_benchmark_is_hollow_and_said_so():
    cell = dict(model="m1", dataset="d1", plw=0.5, seed=1)
    scores = synthetic_scores(n_benchmarks=4, drop=[(cell, "bench0")], seed=7)
    figure = aggregate_figure(scores, regression_table(scores, FORMULA, POWER, bootstrap_samples=0), POWER)
    drawn = [(layer, frame[frame["plw"] == 0.5]) for layer, frame in layers_of(figure, "geom_point")
             if "plw" in frame and (frame["plw"] == 0.5).any()]
    assert len(drawn) == 1, "the cell is drawn once"
    [(layer, rows)] = drawn
    # hollow, at the mean of the three benchmarks it has
    assert layer.geom.aes_params.get("fill") == "white"
    available = primary_scores(scores).query("plw == 0.5")["score"]
    assert len(available) == 3 and rows["score"].to_numpy() == pytest.approx([available.mean()])
    # every other cell has all four benchmarks and is solid
    solid = figure.data
    assert len(solid) == len(PLW_GRID) - 1 and 0.5 not in set(solid["plw"])
    assert "1 cell with missing benchmarks shown hollow" in figure.labels.subtitle


def test_figure_1_says_which_benchmarks_the_base_models_line_averages_when_some_are_judged_only():
    scores = synthetic_scores(n_benchmarks=4, base_models=True, seed=5)
    scores = scores[~(scores["plw"].isna() & (scores["benchmark"] == "bench3"))]  # a judged one: no base row
    figure = aggregate_figure(scores, regression_table(scores, FORMULA, POWER, bootstrap_samples=0), POWER)
    [(_, line)] = layers_of(figure, "geom_hline")
    base = scores[scores["plw"].isna() & scores["primary"]]
    assert line["score"].to_numpy() == pytest.approx([base["score"].mean()])
    assert "dashed: the base model's mean over the 3 benchmarks it is scored on (not bench3)" in figure.labels.subtitle


def test_figure_1_marks_the_critical_weight_and_its_bootstrap_interval():
    scores = synthetic_scores(models=("m1", "m2"), seeds=(1, 2), n_benchmarks=3, seed=3)
    table = regression_table(scores, FORMULA, POWER, bootstrap_samples=5)
    fits = table[table["model"] != "pooled"].groupby("model").first()
    assert fits[["critical_plw_ci_low", "critical_plw_ci_high"]].notna().all(axis=None)
    figure = aggregate_figure(scores, table, POWER)
    [(_, lines)] = layers_of(figure, "geom_vline")
    lines = lines.set_index("model").loc[fits.index]
    assert lines["wp"].to_numpy() == pytest.approx((fits["critical_plw"] ** POWER).to_numpy())
    [(_, bands)] = layers_of(figure, "geom_rect")
    bands = bands.set_index("model").loc[fits.index]
    assert bands["wp_low"].to_numpy() == pytest.approx((fits["critical_plw_ci_low"] ** POWER).to_numpy())
    assert bands["wp_high"].to_numpy() == pytest.approx((fits["critical_plw_ci_high"] ** POWER).to_numpy())


def test_figure_1_marks_a_grid_end_weight_apart_from_a_vertex():
    scores = pd.concat([synthetic_scores(datasets=("concave",), n_benchmarks=3, seed=4),
                        synthetic_scores(datasets=("rising",), slope=0.2, curvature=0.05, n_benchmarks=3, seed=4)],
                       ignore_index=True)
    figure = aggregate_figure(scores, regression_table(scores, FORMULA, POWER, bootstrap_samples=0), POWER)
    [(layer, marks)] = [(layer, frame) for layer, frame in layers_of(figure, "geom_point") if "critical_kind" in frame]
    assert marks.set_index("dataset")["critical_kind"].to_dict() == {"concave": "vertex", "rising": "grid end"}
    plt.close(figure.draw())
    assert layer.data["shape"].nunique() == 2, "each kind is drawn with a marker of its own"
    assert "grid end" in figure.labels.subtitle


# --- which code made the results ---------------------------------------------------------------------------


def test_the_table_says_when_evaluations_come_from_different_code():
    scores = synthetic_scores(n_benchmarks=2, drop=[(dict(model="m1", dataset="d1", plw=0.0, seed=1), "bench0")])
    assert "do not record their code" in code_section(scores)
    made = scores["status"] != "missing"
    scores.loc[made, "code_commit"], scores.loc[made, "code_modified"] = "a" * 40, False
    assert "Every evaluation was made by commit aaaaaaaaaaaa." in code_section(scores)

    older = made & (scores["plw"] == 1.0)
    scores.loc[older, "code_commit"], scores.loc[older, "code_modified"] = "b" * 40, True
    section = code_section(scores)
    assert "**The evaluations come from different code**" in section
    assert "- aaaaaaaaaaaa: 17 evaluations" in section and "- bbbbbbbbbbbb (modified): 2 evaluations" in section


# --- the cost table ----------------------------------------------------------------------------------------


def test_cost_rows_take_snakemakes_benchmark_file_and_count_gpu_hours(tmp_path):
    from plw.cost import cost_markdown, job_cost

    tsv = tmp_path / "train.tsv"
    tsv.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                   "1800.5\t0:30:00\t2048.0\t4096.0\t1.0\t1.0\t0.0\t0.0\t95.0\t3600.0\n")
    cell = dict(model="m", dataset="d", completion_weight=1.0, plw=0.1, seed=42)
    train = job_cost(str(tsv), 4, stage="train", **cell)
    evaluation = job_cost(str(tsv), 1, stage="evaluate", **cell, benchmark="b")
    assert train == {"stage": "train", **cell, "benchmark": None,
                     "wall_s": 1800.5, "cpu_s": 3600.0, "max_rss_mb": 2048.0, "gpus": 4,
                     "gpu_hours": pytest.approx(4 * 1800.5 / 3600)}
    markdown = cost_markdown(pd.DataFrame([train, evaluation]))
    # per stage, the whole sweep, and the cell's training with its evaluation: 5 GPU-hours in 1 h of wall time
    assert "| train | 1 | 0.500 | 1.000 | 2.001 | 2.00 |" in markdown
    assert "| all | 2 | 1.000 | 2.000 | 2.501 | 2.00 |" in markdown
    assert "| m | d | 1 | 0.1 | 42 | 1.000 | 2.000 | 2.501 | 2.00 |" in markdown
