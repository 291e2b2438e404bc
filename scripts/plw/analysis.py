"""Scores as a tidy table, the paper's mixed-effects regression, the critical weight, and its bootstrap.

Model: score ~ wp + wp² with a random intercept per benchmark (statsmodels MixedLM), wp = plw ** power.
Scores are fractions: metrics on a 0-100 scale (BLEU, chrF) are divided by 100; `value` keeps the raw number.
"""

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats

PERCENT_METRICS = {"bleu", "chrf", "ter"}
CELL_KEYS = ["model", "dataset", "plw", "seed"]
REGRESSION_COLUMNS = ["dataset", "model", "term", "estimate", "stderr", "p_value", "lrt_statistic", "lrt_df",
                      "lrt_p_value", "critical_plw", "critical_kind", "n_observations", "critical_plw_ci_low",
                      "critical_plw_ci_high", "note"]


def collect_scores(frames: list[pd.DataFrame], expected: pd.DataFrame, primary_metric: dict[str, str],
                   power: float) -> pd.DataFrame:
    """All evaluation rows, plus one row with status 'missing' for each expected (cell, benchmark) without
    results, a wp column, the score as a fraction, and the configured primary metric flagged. A primary score
    that is not a finite number (lm-eval can report NaN) gets status 'not finite' and stays out of the fits."""
    scores = (pd.concat(frames, ignore_index=True) if frames
              else pd.DataFrame(columns=[*expected.columns, "metric", "value", "stderr"]))
    scores["status"] = "ok"
    found = scores[["model", "dataset", "plw", "seed", "benchmark"]].drop_duplicates()
    missing = expected.merge(found, how="left", indicator=True).query("_merge == 'left_only'").drop(columns="_merge")
    missing = missing.assign(metric=missing["benchmark"].map(primary_metric), status="missing")
    scores = pd.concat([scores, missing], ignore_index=True)
    scores["plw"] = scores["plw"].astype("float64")
    scores["seed"] = scores["seed"].astype("Int64")
    scores["wp"] = scores["plw"] ** power
    scores["score"] = scores["value"].where(~scores["metric"].isin(PERCENT_METRICS), scores["value"] / 100)
    scores["primary"] = scores["metric"] == scores["benchmark"].map(primary_metric)
    not_finite = scores["primary"] & (scores["status"] == "ok") & ~np.isfinite(scores["score"].astype("float64"))
    scores.loc[not_finite, "status"] = "not finite"
    return scores


def primary_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """The primary metric of every fine-tuned cell that has a result (base-model rows have no plw)."""
    return scores[scores["primary"] & (scores["status"] == "ok") & scores["plw"].notna()].copy()


def missing_cells(scores: pd.DataFrame) -> pd.DataFrame:
    """The (cell, benchmark) pairs left out of the fits: no result, or a primary score that is not finite."""
    return scores.loc[scores["status"] != "ok", [*CELL_KEYS, "benchmark", "status"]].reset_index(drop=True)


class FitError(ValueError):
    """No optimizer found a finite maximum of the likelihood."""


def fit_mixed(data: pd.DataFrame, formula: str, reml: bool = False):
    """MixedLM with a random intercept per benchmark. An optimizer can stop at a singular Hessian, report
    llf = +inf with zero group variance, or stop before it converges, so they are tried in turn: the first
    converged finite fit is kept, else the finite fit of highest likelihood (its `converged` is False)."""
    model = smf.mixedlm(formula, data, groups=data["benchmark"])
    problems, unconverged = [], []
    for method in ("bfgs", "lbfgs", "powell"):
        try:
            result = model.fit(reml=reml, method=[method])
        except (np.linalg.LinAlgError, ValueError) as error:
            problems.append(f"{method}: {error}")
            continue
        if not (np.isfinite(result.llf) and np.all(np.isfinite(result.bse_fe))):
            problems.append(f"{method}: llf {result.llf}")
        elif result.converged:
            return result
        else:
            unconverged.append(result)
    if unconverged:
        return max(unconverged, key=lambda result: result.llf)
    raise FitError(f"{formula!r} on {len(data)} scores: no finite fit ({'; '.join(problems)})")


def critical_weight(b1: float, b2: float, power: float, wp_range: tuple[float, float] = (0.0, 1.0)) -> tuple[float, str]:
    """λ = (−b1 / (2·b2))^(1/power) for a concave fit whose vertex lies within the wp of the grid; else the grid
    end with the higher fitted score. Nothing is extrapolated beyond the PLW values that were trained."""
    low, high = wp_range
    if b2 < 0:
        vertex = -b1 / (2 * b2)
        if low <= vertex <= high:
            return vertex ** (1 / power), "vertex"
    fitted_gain = b1 * (high - low) + b2 * (high ** 2 - low ** 2)  # at the high end over the low end
    return (high if fitted_gain > 0 else low) ** (1 / power), "grid end"


def _critical_weight_of(fit, data: pd.DataFrame, power: float) -> tuple[float, str]:
    terms = [name for name in fit.fe_params.index if name != "Intercept"]
    return critical_weight(fit.fe_params[terms[0]], fit.fe_params[terms[1]], power,
                           (data["wp"].min(), data["wp"].max()))


def fit_summary(data: pd.DataFrame, formula: str, power: float) -> dict:
    """Coefficients (SE, Wald p), the LRT of the formula against the intercept-only model (both ML), and λ."""
    if data["plw"].nunique() < 3:
        raise FitError(f"a quadratic in wp needs at least 3 PLW values; this scope has {data['plw'].nunique()}")
    full = fit_mixed(data, formula)
    null = fit_mixed(data, formula.split("~")[0] + "~ 1")
    terms = [name for name in full.fe_params.index if name != "Intercept"]
    lrt = 2 * (full.llf - null.llf)
    weight, kind = _critical_weight_of(full, data, power)
    unconverged = [name for name, fit in (("full", full), ("intercept-only", null)) if not fit.converged]
    return {
        "coefficients": pd.DataFrame({"term": full.fe_params.index, "estimate": full.fe_params.values,
                                      "stderr": full.bse_fe.values, "p_value": full.pvalues[full.fe_params.index].values}),
        "lrt_statistic": lrt, "lrt_df": len(terms), "lrt_p_value": stats.chi2.sf(lrt, len(terms)),
        "critical_plw": weight, "critical_kind": kind, "n_observations": len(data),
        "note": (f"no optimizer converged for the {' and the '.join(unconverged)} model: read the LRT and the "
                 "critical PLW with care" if unconverged else ""),
    }


def bootstrap_critical_weight(data: pd.DataFrame, formula: str, power: float, samples: int,
                              seed: int = 0) -> tuple[float, float, int]:
    """95% percentile interval of λ, resampling whole seeds (runs) with replacement within each PLW, and the
    number of resamples that could not be fitted (left out of the interval)."""
    rng = np.random.default_rng(seed)
    runs = data.groupby(["model", "plw"])
    weights, failures = [], 0
    for _ in range(samples):
        parts = []
        for _, group in runs:
            seeds = group["seed"].unique()
            parts += [group[group["seed"] == chosen] for chosen in rng.choice(seeds, size=len(seeds))]
        resampled = pd.concat(parts, ignore_index=True)
        try:
            full = fit_mixed(resampled, formula)
        except FitError:  # a degenerate resample says nothing about λ; the interval uses the others
            failures += 1
            continue
        weights.append(_critical_weight_of(full, resampled, power)[0])
    if not weights:
        return np.nan, np.nan, failures
    low, high = np.percentile(weights, [2.5, 97.5])
    return float(low), float(high), failures


def regression_table(scores: pd.DataFrame, formula: str, power: float, bootstrap_samples: int) -> pd.DataFrame:
    """Table 3, long: one row per (scope, term); per dataset pooled over models, and per (dataset, model)."""
    data = primary_scores(scores)
    rows = []
    scopes = [(dataset, "pooled", group) for dataset, group in data.groupby("dataset")]
    scopes += [(dataset, model, group) for (dataset, model), group in data.groupby(["dataset", "model"])]
    for dataset, model, group in scopes:
        try:
            summary = fit_summary(group, formula, power)
        except FitError as error:  # one scope that cannot be fitted must not hide the others
            rows.append({"dataset": dataset, "model": model, "n_observations": len(group),
                         "note": f"not estimable: {error}"})
            continue
        several_seeds = group["seed"].nunique() > 1
        low, high, failures = (bootstrap_critical_weight(group, formula, power, bootstrap_samples)
                               if several_seeds and bootstrap_samples else (np.nan, np.nan, 0))
        fit_level = {key: value for key, value in summary.items() if key != "coefficients"}
        if failures:
            fit_level["note"] = "; ".join(filter(None, [fit_level["note"], f"{failures} of {bootstrap_samples} "
                                                        "bootstrap resamples could not be fitted"]))
        for coefficient in summary["coefficients"].to_dict("records"):
            rows.append({"dataset": dataset, "model": model, **coefficient, **fit_level,
                         "critical_plw_ci_low": low, "critical_plw_ci_high": high})
    return pd.DataFrame(rows, columns=REGRESSION_COLUMNS)


def is_estimable(fit: pd.DataFrame) -> bool:
    """Whether one scope's rows of the regression table hold a fit (else a single 'not estimable' row)."""
    return bool(fit["term"].notna().any())


def regression_markdown(table: pd.DataFrame, missing: pd.DataFrame, formula: str, power: float) -> str:
    lines = [f"# Mixed-effects regression (Table 3)\n", f"`{formula}` with a random intercept per benchmark, "
             f"fitted by maximum likelihood; wp = PLW^{power}. LRT: against the intercept-only model. Scores are "
             "fractions (BLEU and chrF divided by 100).\n",
             "| dataset | model | term | estimate | SE | p | LRT χ² (df) | LRT p | critical PLW |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    notes = []
    for (dataset, model), fit in table.groupby(["dataset", "model"], sort=False):
        first = fit.iloc[0]
        if not is_estimable(fit):
            lines.append(f"| {dataset} | {model} | | | | | | | {first.note} |")
            continue
        if first.note:
            notes.append(f"- {dataset}, {model}: {first.note}.")
        weight = f"{first.critical_plw:.4g}" + (" (grid end)" if first.critical_kind == "grid end" else "")
        if not np.isnan(first.critical_plw_ci_low):
            weight += f" [{first.critical_plw_ci_low:.3g}, {first.critical_plw_ci_high:.3g}]"
        for index, row in enumerate(fit.itertuples()):
            fit_cells = (f"{first.lrt_statistic:.2f} ({first.lrt_df}) | {first.lrt_p_value:.3g} | {weight}"
                         if index == 0 else " | | ")
            lines.append(f"| {dataset} | {model} | {row.term} | {row.estimate:.4f} | {row.stderr:.4f} | "
                         f"{row.p_value:.3g} | {fit_cells} |")
    lines.append("\nA grid-end critical PLW is the end of the trained PLW grid with the higher fitted score: the fit "
                 "has no maximum inside the grid, and nothing beyond it is extrapolated.")
    if notes:
        lines += ["\n## Notes\n", *notes]
    lines.append("\n## Missing cells\n")
    if missing.empty:
        lines.append("None: every (cell, benchmark) has a result.")
    else:
        lines.append("These evaluations have no usable result and are left out of the fits, not averaged away:\n")
        lines.append("| model | dataset | plw | seed | benchmark | status |\n| --- | --- | --- | --- | --- | --- |")
        for row in missing.itertuples():
            plw = "base" if pd.isna(row.plw) else row.plw
            lines.append(f"| {row.model} | {row.dataset} | {plw} | {row.seed} | {row.benchmark} | {row.status} |")
    return "\n".join(lines) + "\n"
