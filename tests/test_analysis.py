"""The analysis package: score collection, the mixed-effects regression, the critical weight, and the figures.

Scores are synthetic (a known quadratic in wp plus benchmark intercepts and noise), built into evaluation
frames shaped like plw.evaluate.result_rows and collected with collect_scores, as the workflow does.
"""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from plw.analysis import (collect_scores, critical_weight, fit_mixed, fit_summary, missing_cells, primary_scores,
                          regression_markdown, regression_table)
from plw.evaluate import ROW_COLUMNS, ROW_TYPES
from plw.figures import aggregate_figure, benchmark_figure

# statsmodels warns whenever a random-effect variance is below an absolute 0.01, which every variance of
# fraction-scale scores is (a benchmark spread of 0.05 has variance 0.0025): noise here, not a fault
pytestmark = pytest.mark.filterwarnings("ignore:The MLE may be on the boundary of the parameter space")

POWER = 0.30103  # log10(2), the paper's wp exponent
FORMULA = "score ~ wp + I(wp**2)"  # the default analysis.formula of the config schema
PLW_GRID = [0, 0.0005, 0.002236, 0.01, 0.02463, 0.05, 0.1, 0.2463, 0.5, 1]
TRUE_COEFFICIENTS = {"Intercept": 0.5, "wp": 0.3, "I(wp ** 2)": -0.25}


def result_frame(cell: dict, benchmark: str, values: dict[str, float]) -> pd.DataFrame:
    """One evaluation's tidy rows, with the columns and types that plw.evaluate.result_rows writes."""
    rows = [{**cell, "benchmark": benchmark, "task": f"demo_{benchmark}", "metric": metric, "value": value,
             "stderr": None, "num_fewshot": 0, "n_samples": 100, "lm_eval_version": "test"}
            for metric, value in values.items()]
    return pd.DataFrame(rows, columns=ROW_COLUMNS).astype(ROW_TYPES)


def expected_frame(cells: list[dict], benchmarks: list[str]) -> pd.DataFrame:
    """Like the workflow's expected_evaluations() once collect_scores.py has dropped the path column."""
    return pd.DataFrame([{**cell, "benchmark": benchmark} for cell in cells for benchmark in benchmarks])


def synthetic_scores(*, models=("m1",), datasets=("d1",), seeds=(1,), n_benchmarks=8, slope=0.3, curvature=-0.25,
                     noise=0.01, base_models=False, drop=(), not_finite=(), seed=0):
    """Scores from score = 0.5 + slope·wp + curvature·wp² + benchmark intercept + noise, collected.

    Even-numbered benchmarks report BLEU (0-100, so collect_scores must divide by 100), the others acc; each
    evaluation also reports a secondary metric that must not be taken as primary. `drop` lists
    (cell, benchmark) pairs whose result frame is left out, as if that evaluation never finished; `not_finite`
    those whose primary metric is NaN, as lm-eval reports a metric it could not compute.
    """
    rng = np.random.default_rng(seed)
    benchmarks = [f"bench{index}" for index in range(n_benchmarks)]
    primary = {name: "bleu" if index % 2 == 0 else "acc" for index, name in enumerate(benchmarks)}
    intercepts = dict(zip(benchmarks, rng.normal(0, 0.05, n_benchmarks)))
    cells = [dict(model=model, dataset=dataset, plw=float(plw), seed=seed_)
             for model in models for dataset in datasets for plw in PLW_GRID for seed_ in seeds]
    frames = []
    for cell in cells:
        wp = cell["plw"] ** POWER
        for benchmark in benchmarks:
            score = 0.5 + slope * wp + curvature * wp ** 2 + intercepts[benchmark] + rng.normal(0, noise)
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
        dict(model="m1", dataset="d1", plw=0.5, seed=1, benchmark="bench3", status="missing")]

    fitted = primary_scores(scores)
    assert len(fitted) == len(PLW_GRID) * 4 - 1  # one primary row per finished evaluation, no base rows
    assert (fitted["status"] == "ok").all() and fitted["plw"].notna().all()
    assert not ((fitted["plw"] == 0.5) & (fitted["benchmark"] == "bench3")).any()

    table = regression_table(scores, FORMULA, POWER, bootstrap_samples=0)
    assert table["n_observations"].eq(len(fitted)).all()
    markdown = regression_markdown(table, missing_cells(scores), FORMULA, POWER)
    assert "## Missing cells" in markdown
    assert "| m1 | d1 | 0.5 | 1 | bench3 | missing |" in markdown


def test_a_primary_score_that_is_not_finite_is_listed_and_left_out_of_the_fits():
    broken = (dict(model="m1", dataset="d1", plw=0.1, seed=1), "bench1")
    scores = synthetic_scores(n_benchmarks=4, not_finite=[broken])
    assert missing_cells(scores).to_dict("records") == [
        dict(model="m1", dataset="d1", plw=0.1, seed=1, benchmark="bench1", status="not finite")]
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
