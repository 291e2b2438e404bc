"""The paper's figures with plotnine: scores against wp, with the fitted quadratic and the base model."""

import numpy as np
import pandas as pd
from plotnine import (aes, element_text, facet_grid, facet_wrap, geom_hline, geom_line, geom_point, ggplot, labs,
                      scale_x_continuous, theme, theme_bw)

from plw.analysis import PERCENT_METRICS, is_estimable, primary_scores

SCORE_UNITS = "fraction; BLEU, chrF / 100"


def wp_axis(plws: np.ndarray, power: float):
    """The x axis in wp, with a break at every PLW of the grid, labelled with that PLW."""
    plws = np.unique(plws)
    return scale_x_continuous(breaks=list(plws ** power), labels=[f"{p:g}" for p in plws],
                              name=f"PLW (axis spaced as wp = PLW^{power:g})")


def cell_means(data: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return data.groupby(keys, as_index=False).agg(score=("score", "mean"), wp=("wp", "first"))


def fitted_curves(regression: pd.DataFrame) -> pd.DataFrame:
    """Fixed-effect predictions on a fine wp grid for each (dataset, model) fit (the benchmark mean intercept)."""
    grid = np.linspace(0, 1, 101)
    curves = []
    for (dataset, model), fit in regression.groupby(["dataset", "model"]):
        if model == "pooled" or not is_estimable(fit):  # the pooled fit has no colour; unfitted scopes no curve
            continue
        beta = fit.set_index("term")["estimate"]
        terms = [t for t in beta.index if t != "Intercept"]
        curves.append(pd.DataFrame({"dataset": dataset, "model": model, "wp": grid,
                                    "score": beta["Intercept"] + beta[terms[0]] * grid + beta[terms[1]] * grid ** 2}))
    return pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["dataset", "model", "wp", "score"])


def base_reference(scores: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    base = scores[scores["primary"] & (scores["status"] == "ok") & scores["plw"].isna()]
    return base.groupby(keys, as_index=False)["score"].mean()


def aggregate_figure(scores: pd.DataFrame, regression: pd.DataFrame, power: float):
    """Figure 1: the unweighted mean of the benchmark scores against wp, a panel per dataset, a colour per model."""
    data = primary_scores(scores)
    points = cell_means(data, ["dataset", "model", "plw", "seed"])
    curves = fitted_curves(regression)
    base = base_reference(scores, ["model", "benchmark"]).groupby("model", as_index=False)["score"].mean()
    return (ggplot(points, aes("wp", "score", colour="model"))
            + geom_hline(base, aes(yintercept="score", colour="model"), linetype="dashed", alpha=0.7)
            + geom_point(size=2.5, alpha=0.8)
            + geom_line(curves, aes("wp", "score", colour="model"))
            + facet_wrap("dataset")
            + wp_axis(data["plw"].to_numpy(), power)
            + labs(y=f"mean primary score ({SCORE_UNITS})", colour="model",
                   title="Aggregate score against prompt-loss weight (dashed: base model)")
            + theme_bw() + theme(figure_size=(4 + 3 * data["dataset"].nunique(), 4),
                                 axis_text_x=element_text(rotation=45)))


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
