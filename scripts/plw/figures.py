"""The paper's figures with plotnine: scores against wp, with the fitted quadratic, λ and the base model."""

import numpy as np
import pandas as pd
from plotnine import (
    aes,
    element_text,
    facet_grid,
    facet_wrap,
    geom_hline,
    geom_line,
    geom_point,
    geom_rect,
    geom_vline,
    ggplot,
    labs,
    scale_shape_manual,
    scale_x_continuous,
    theme,
    theme_bw,
)

from plw.analysis import CELL_KEYS, LINEAR_TERM, PERCENT_METRICS, QUADRATIC_TERM, analysis_scope, primary_scores
from plw.mechanisms import MEASURES

SCORE_UNITS = "fraction; BLEU, chrF / 100"
CRITICAL_SHAPES = {"vertex": "D", "grid end": "^"}
CRITICAL_COLUMNS = ["critical_plw", "critical_kind", "critical_plw_ci_low", "critical_plw_ci_high"]
FIT_COLUMNS = ["dataset", "model", "b0", "b1", "b2", *CRITICAL_COLUMNS]


def wp_axis(plws: np.ndarray, power: float):
    """The x axis in wp, with a break at every PLW of the grid, labelled with that PLW."""
    plws = np.unique(plws)
    return scale_x_continuous(breaks=list(plws ** power), labels=[f"{p:g}" for p in plws],
                              name=f"PLW (axis spaced as wp = PLW^{power:g})")


def cell_means(data: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return data.groupby(keys, as_index=False).agg(score=("score", "mean"), wp=("wp", "first"))


def aggregate_points(scores: pd.DataFrame) -> pd.DataFrame:
    """Figure 1's points: each fine-tuned cell's mean primary score over its benchmarks. `complete` is False for a
    cell with a benchmark that has no usable score (missing, not finite): its mean is over the others alone."""
    points = cell_means(primary_scores(scores), CELL_KEYS)
    lacking = scores[scores["primary"] & (scores["status"] != "ok") & scores["plw"].notna()]
    lacking = lacking.assign(dataset=analysis_scope(lacking))
    points["complete"] = ~pd.MultiIndex.from_frame(points[CELL_KEYS]).isin(
        pd.MultiIndex.from_frame(lacking[CELL_KEYS]))
    return points


def fit_coefficients(regression: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model) fit: b0, b1, b2 (the terms Intercept, wp and I(wp**2), by name), and λ with its
    bootstrap interval. The pooled fit has no colour of its own, an unfitted scope no coefficients."""
    fitted = regression[(regression["model"] != "pooled") & regression["term"].notna()]
    if fitted.empty:
        return pd.DataFrame(columns=FIT_COLUMNS)
    keys = ["dataset", "model"]
    coefficients = (fitted.pivot_table(index=keys, columns="term", values="estimate")
                    .rename(columns={"Intercept": "b0", LINEAR_TERM: "b1", QUADRATIC_TERM: "b2"}))
    weights = fitted.groupby(keys)[CRITICAL_COLUMNS].first()
    return coefficients.join(weights).reset_index()[FIT_COLUMNS]


def fitted_score(fit: pd.DataFrame) -> pd.Series:
    """The fixed-effect prediction (the benchmarks' mean intercept) at each row's wp."""
    return fit["b0"] + fit["b1"] * fit["wp"] + fit["b2"] * fit["wp"] ** 2


def fitted_curves(regression: pd.DataFrame) -> pd.DataFrame:
    """Fixed-effect predictions on a fine wp grid for each (dataset, model) fit."""
    curves = fit_coefficients(regression).merge(pd.DataFrame({"wp": np.linspace(0, 1, 101)}), how="cross")
    return curves.assign(score=fitted_score(curves).astype("float64"))[["dataset", "model", "wp", "score"]]


def critical_marks(regression: pd.DataFrame, power: float) -> pd.DataFrame:
    """λ of each (dataset, model) fit in wp (wp_low, wp_high: its bootstrap interval), on its fitted curve."""
    marks = fit_coefficients(regression)
    marks = marks.assign(wp=marks["critical_plw"] ** power, wp_low=marks["critical_plw_ci_low"] ** power,
                         wp_high=marks["critical_plw_ci_high"] ** power)
    return marks.assign(score=fitted_score(marks).astype("float64"))


def base_reference(scores: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    base = scores[scores["primary"] & (scores["status"] == "ok") & scores["plw"].isna()]
    return base.groupby(keys, as_index=False)["score"].mean()


def aggregate_figure(scores: pd.DataFrame, regression: pd.DataFrame, power: float):
    """Figure 1: the unweighted mean of the benchmark scores against wp, a panel per dataset, a colour per model,
    with each fit's curve and λ. A cell that lacks a benchmark is drawn hollow, not as a comparable mean."""
    data = primary_scores(scores)
    points = aggregate_points(scores)
    incomplete = points[~points["complete"]]
    marks = critical_marks(regression, power)
    bands = marks[marks["wp_low"].notna()]
    base_scores = base_reference(scores, ["model", "benchmark"])
    base = base_scores.groupby("model", as_index=False)["score"].mean()
    layers, notes = [], []
    unscored = sorted(set(data["benchmark"]) - set(base_scores["benchmark"]))
    if not base.empty and unscored:  # the judged benchmarks: base models are not judged
        notes.append(f"dashed: the base model's mean over the {base_scores['benchmark'].nunique()} benchmarks it is "
                     f"scored on (not {', '.join(unscored)})")
    if not bands.empty:
        layers.append(geom_rect(bands, aes(xmin="wp_low", xmax="wp_high", fill="model"), ymin=-np.inf, ymax=np.inf,
                                alpha=0.12, inherit_aes=False, show_legend=False))
    if not marks.empty:
        layers += [geom_vline(marks, aes(xintercept="wp", colour="model"), linetype="dotted", show_legend=False),
                   geom_point(marks, aes("wp", "score", colour="model", shape="critical_kind"), size=4,
                              show_legend={"colour": False}),
                   scale_shape_manual(values=CRITICAL_SHAPES, name="critical PLW λ")]
        notes.append("dotted: critical PLW λ of each model's fit (a grid end where the fit has no maximum inside "
                     "the grid)" + ("; band: its 95% bootstrap interval" if not bands.empty else ""))
    if not incomplete.empty:
        layers.append(geom_point(incomplete, shape="o", fill="white", size=2.5, show_legend=False))
        notes.append(f"{len(incomplete)} cell{'s' if len(incomplete) > 1 else ''} with missing benchmarks shown "
                     "hollow, mean of the available ones")
    return (ggplot(points[points["complete"]], aes("wp", "score", colour="model"))
            + geom_hline(base, aes(yintercept="score", colour="model"), linetype="dashed", alpha=0.7)
            + geom_point(size=2.5, alpha=0.8)
            + geom_line(fitted_curves(regression), aes("wp", "score", colour="model"))
            + layers
            + facet_wrap("dataset")
            + wp_axis(data["plw"].to_numpy(), power)
            + labs(y=f"mean primary score ({SCORE_UNITS})", colour="model",
                   title="Aggregate score against prompt-loss weight (dashed: base model)",
                   subtitle="\n".join(notes) or None)
            + theme_bw() + theme(figure_size=(4 + 3 * data["dataset"].nunique(), 4.5),
                                 axis_text_x=element_text(rotation=45), plot_subtitle=element_text(size=8)))


def benchmark_figure(scores: pd.DataFrame, power: float):
    """Figure 2: each benchmark's primary score against wp, facets benchmark × dataset."""
    # each panel names its benchmark's primary metric and scale
    scores = scores.assign(benchmark=scores["benchmark"] + ": " + scores["metric"]
                           + scores["metric"].isin(PERCENT_METRICS).map({True: " / 100", False: ""}))
    data = primary_scores(scores)
    points = cell_means(data, ["dataset", "model", "benchmark", "plw"])
    base = base_reference(scores, ["model", "benchmark"])
    return (ggplot(points, aes("wp", "score", colour="model"))
            + geom_hline(base, aes(yintercept="score", colour="model"), linetype="dashed", alpha=0.7)
            + geom_point(size=2) + geom_line()
            + facet_grid("benchmark ~ dataset", scales="free_y")
            + wp_axis(data["plw"].to_numpy(), power)
            + labs(y=f"primary score ({SCORE_UNITS})", colour="model",
                   title="Benchmark scores against prompt-loss weight (dashed: base model)")
            + theme_bw() + theme(figure_size=(3 + 3 * data["dataset"].nunique(), 2 + 2 * data["benchmark"].nunique()),
                                 axis_text_x=element_text(rotation=45)))


def mechanism_figure(mechanisms: pd.DataFrame, power: float):
    """Each mechanism measure of every cell against wp: a row of panels per measure, a column per dataset."""
    data = (mechanisms.assign(wp=mechanisms["plw"] ** power, dataset=analysis_scope(mechanisms))
            .melt(id_vars=[*CELL_KEYS, "wp"], value_vars=list(MEASURES), var_name="measure")
            .assign(measure=lambda frame: frame["measure"].map(MEASURES)))
    points = data.groupby(["model", "dataset", "measure", "plw"], as_index=False).agg(value=("value", "mean"),
                                                                                    wp=("wp", "first"))
    return (ggplot(points, aes("wp", "value", colour="model"))
            + geom_point(size=2) + geom_line()
            + facet_grid("measure ~ dataset", scales="free_y")
            + wp_axis(data["plw"].to_numpy(), power)
            + labs(y="", colour="model", title="Why PLW matters: loss variability, weight distance, memorization")
            + theme_bw() + theme(figure_size=(3 + 3 * data["dataset"].nunique(), 7),
                                 axis_text_x=element_text(rotation=45)))
