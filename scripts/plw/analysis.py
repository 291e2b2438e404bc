"""Scores as a tidy table, the paper's mixed-effects regression, the critical weight, and its bootstrap.

Model: score ~ wp + wp² with a random intercept per benchmark (statsmodels MixedLM), wp = plw ** power, fitted to
the optimum that R's lme4 finds: REML estimates as lmer reports them (or ML), the LRT between ML fits as anova()
refits them. Scores are fractions: metrics on a 0-100 scale (BLEU, chrF) are divided by 100; `value` keeps the raw
number. statsmodels, scipy and patsy are imported where they are used: the workflow imports check_formula when it
parses its config.
"""

import ast
import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd

from plw.evaluate import ROW_COLUMNS

PERCENT_METRICS = {"bleu", "chrf", "ter"}
CELL_KEYS = ["model", "dataset", "completion_weight", "plw", "seed"]
SCORE_COLUMNS = [*ROW_COLUMNS, "status", "wp", "score", "primary"]  # what collect_scores writes
LINEAR_TERM, QUADRATIC_TERM = "wp", "I(wp ** 2)"  # λ's terms, as the formula parser names wp and I(wp**2)
ESTIMATIONS = ("reml", "ml")
ESTIMATION_TEXT = {"reml": "restricted maximum likelihood (REML), as R's lmer", "ml": "maximum likelihood (ML)"}
REGRESSION_COLUMNS = ["dataset", "model", "term", "estimate", "stderr", "p_value", "lrt_statistic", "lrt_df",
                      "lrt_p_value", "critical_plw", "critical_kind", "n_observations", "critical_plw_ci_low",
                      "critical_plw_ci_high", "note", "estimation", "benchmark_variance", "residual_variance",
                      "loglik", "ml_loglik", "null_ml_loglik"]
# θ = σ_benchmark / σ_residual, from hardly any benchmark variance to BLEU on 0-100 beside accuracies (θ ~ 10^4)
LOG_THETA_GRID = np.log(np.logspace(-4, 7, 23))


def with_completion_weight(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of fine-tuned cells with their completion weight: 1 where the row has none (a cell of the paper's weight
    is written without it, plw.grid.typed_cell); base-model rows keep none."""
    weight = frame.get("completion_weight", pd.Series(np.nan, index=frame.index)).astype("float64")
    return frame.assign(completion_weight=weight.where(weight.notna() | frame["plw"].isna(), 1.0))


def collect_scores(frames: list[pd.DataFrame], expected: pd.DataFrame, primary_metric: dict[str, str],
                   power: float) -> pd.DataFrame:
    """All evaluation rows, plus one row with status 'missing' for each expected (cell, benchmark) without
    results, a wp column, the score as a fraction, and the configured primary metric flagged. A primary score
    that is not a finite number (lm-eval can report NaN) gets status 'not finite' and stays out of the fits."""
    scores = with_completion_weight(pd.concat(frames, ignore_index=True) if frames
                                    else pd.DataFrame(columns=[*expected.columns, "metric", "value", "stderr"]))
    scores["status"] = "ok"
    found = scores[[*CELL_KEYS, "benchmark"]].drop_duplicates()
    missing = (with_completion_weight(expected).merge(found, how="left", indicator=True)
               .query("_merge == 'left_only'").drop(columns="_merge"))
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


def analysis_scope(frame: pd.DataFrame) -> pd.Series:
    """The dataset as the fits and figures scope it: a completion weight other than the paper's 1 is an experiment
    of its own ("alpaca (completion weight 0.5)"), so a grid with several is fitted per weight."""
    labels = [dataset if pd.isna(weight) or weight == 1 else f"{dataset} (completion weight {weight:g})"
              for dataset, weight in zip(frame["dataset"], frame["completion_weight"])]
    return pd.Series(labels, index=frame.index, dtype=frame["dataset"].dtype)


def primary_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """The primary metric of every fine-tuned cell that has a result (base-model rows have no plw), its dataset
    scoped by completion weight (analysis_scope)."""
    data = scores[scores["primary"] & (scores["status"] == "ok") & scores["plw"].notna()]
    return data.assign(dataset=analysis_scope(data))


def missing_cells(scores: pd.DataFrame) -> pd.DataFrame:
    """The (cell, benchmark) pairs left out of the fits: no result, or a primary score that is not finite."""
    return scores.loc[scores["status"] != "ok", [*CELL_KEYS, "benchmark", "status"]].reset_index(drop=True)


class FormulaError(ValueError):
    """An analysis formula that the regression cannot use."""


def check_formula(formula: str, columns: Iterable[str] = SCORE_COLUMNS) -> None:
    """Refuse a formula without an intercept and the terms wp and I(wp**2), from which λ is read by name (in any
    order), or one that reads a column not among `columns` (by default those of collect_scores). Fits nothing."""
    import patsy  # light, unlike statsmodels

    if "|" in formula:
        raise FormulaError(f"{formula!r}: the random intercept per benchmark is part of the model; write the fixed "
                           "effects only, e.g. 'score ~ wp + I(wp**2)'")
    try:
        description = patsy.ModelDesc.from_formula(formula)
    except patsy.PatsyError as error:
        raise FormulaError(f"{formula!r} does not parse: {error}") from None
    if not description.lhs_termlist:
        raise FormulaError(f"{formula!r} has no response: write e.g. 'score ~ wp + I(wp**2)'")
    terms = {term.name() for term in description.rhs_termlist}
    lacking = [name for name in ("Intercept", LINEAR_TERM, QUADRATIC_TERM) if name not in terms]
    if lacking:
        power_hint = " (** is Python's power; ^ is XOR)" if "^" in formula else ""
        raise FormulaError(f"{formula!r} lacks {', '.join(lacking)}: the critical weight comes from the terms wp and "
                           f"I(wp**2), in any order, of a model with an intercept{power_hint}")
    read = {name for term in description.lhs_termlist + description.rhs_termlist for factor in term.factors
            for name in _data_names(factor.code)}
    unknown = sorted(read - set(columns))
    if unknown:
        raise FormulaError(f"{formula!r} reads {', '.join(unknown)}, which the scores do not have (they have "
                           f"{', '.join(columns)})")


def _data_names(code: str) -> set[str]:
    """The names that a term's Python code reads as columns: not those it calls (I, C) or looks into (np)."""
    nodes = list(ast.walk(ast.parse(code.strip(), mode="eval")))
    tools = {id(node.func) for node in nodes if isinstance(node, ast.Call)}
    tools |= {id(node.value) for node in nodes if isinstance(node, ast.Attribute)}
    return {node.id for node in nodes if isinstance(node, ast.Name) and id(node) not in tools}


class FitError(ValueError):
    """No optimizer found a finite maximum of the likelihood."""


def fit_mixed(data: pd.DataFrame, formula: str, reml: bool = True):
    """MixedLM with a random intercept per benchmark, at the maximum of its REML (or ML) likelihood.

    statsmodels' optimizers can stop early where the likelihood is flat (a benchmark variance far above the
    residual one) and still report convergence, diverge to llf = +inf, or fail on a singular Hessian. So BFGS from
    statsmodels' start competes with BFGS from the maximum of the profile likelihood (where lme4 ends, to ~1e-6);
    where that maximum is not inside the profile's grid (hardly any benchmark variance), with L-BFGS and Powell.
    The finite fit of highest likelihood is kept; its `converged` says whether its optimizer converged.
    """
    from statsmodels.formula.api import mixedlm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, SingularMatrixWarning

    model = mixedlm(formula, data, groups=data["benchmark"])
    problems = []

    def attempt(method: str, start: float | None = None):
        try:
            with warnings.catch_warnings():  # most attempts lose; the kept fit's convergence goes to the table's note
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.simplefilter("ignore", SingularMatrixWarning)
                fit = model.fit(reml=reml, method=[method], start_params=None if start is None else [start])
        except (np.linalg.LinAlgError, ValueError) as error:
            problems.append(f"{method}: {error}")
            return None
        if np.isfinite(fit.llf) and np.all(np.isfinite(fit.bse_fe)):
            return fit
        problems.append(f"{method}: llf {fit.llf}")
        return None

    fits = [attempt("bfgs")]  # it also sets the model up (reml, penalties) for the profile's loglike and score
    theta = _profile_maximum(model)
    fits += [attempt("bfgs", theta)] if theta is not None else [attempt("lbfgs"), attempt("powell")]
    fits = [fit for fit in fits if fit is not None]
    if not fits:
        raise FitError(f"{formula!r} on {len(data)} scores: no finite fit ({'; '.join(problems)})")
    return max(fits, key=lambda fit: fit.llf)


def _profile_maximum(model) -> float | None:
    """θ = σ_benchmark / σ_residual at the maximum of the likelihood profiled over the fixed effects and σ: the
    best of a grid in log θ, then the root of the score next to it. None if the best is an end of the grid."""
    from scipy.optimize import brentq

    def slope(log_theta: float) -> float:  # the sign of d llf / d log θ
        return model.score(np.exp([log_theta]), profile_fe=True)[0]

    with np.errstate(all="ignore"):
        try:
            llf = np.array([model.loglike(np.exp([log_theta]), profile_fe=True) for log_theta in LOG_THETA_GRID])
        except np.linalg.LinAlgError:
            return None
        best = int(np.argmax(np.where(np.isfinite(llf), llf, -np.inf)))
        if best in (0, len(LOG_THETA_GRID) - 1):
            return None
        low, high = LOG_THETA_GRID[best - 1], LOG_THETA_GRID[best + 1]
        if not slope(low) > 0 > slope(high):
            return None
        return float(np.exp(brentq(slope, low, high, xtol=1e-12)))


def fixed_effects(fit) -> pd.DataFrame:
    """The fixed effects with SEs and Wald p-values as lme4 has them: covariance σ²(X'V⁻¹X)⁻¹ at the fitted
    variances (statsmodels inverts the joint Hessian, whose cross terms of fixed effects and variances are not
    zero on unbalanced data), and the normal p 2·Φ(−|t|) that statsmodels reports (lmer reports none)."""
    from scipy.stats import norm

    ratio = np.asarray(fit.cov_re_unscaled)[0, 0]  # σ²_benchmark / σ²_residual
    # per benchmark, V = σ²(I + ratio·11'), whose inverse is (I − ratio / (1 + n·ratio)·11') / σ²
    xvx = sum(x.T @ x - ratio / (1 + len(x) * ratio) * np.outer(x.sum(axis=0), x.sum(axis=0))
              for x in fit.model.exog_li)
    estimate = fit.fe_params.to_numpy()
    stderr = np.sqrt(np.diag(fit.scale * np.linalg.inv(xvx)))
    return pd.DataFrame({"term": fit.fe_params.index, "estimate": estimate, "stderr": stderr,
                         "p_value": 2 * norm.sf(np.abs(estimate / stderr))})


def critical_weight(b1: float, b2: float, power: float,
                    wp_range: tuple[float, float] = (0.0, 1.0)) -> tuple[float, str]:
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
    return critical_weight(fit.fe_params[LINEAR_TERM], fit.fe_params[QUADRATIC_TERM], power,
                           (data["wp"].min(), data["wp"].max()))


def fit_summary(data: pd.DataFrame, formula: str, power: float, estimation: str = "reml") -> dict:
    """The REML (or ML) fit's coefficients (SE, Wald p), variances and log-likelihood, λ from its coefficients, and
    the LRT of the formula against the intercept-only model between ML fits, as R's anova() refits them."""
    from scipy.stats import chi2

    check_formula(formula, data.columns)
    if estimation not in ESTIMATIONS:
        raise ValueError(f"estimation {estimation!r}: choose one of {', '.join(ESTIMATIONS)}")
    if data["plw"].nunique() < 3:
        raise FitError(f"a quadratic in wp needs at least 3 PLW values; this scope has {data['plw'].nunique()}")
    full_ml = fit_mixed(data, formula, reml=False)
    null_ml = fit_mixed(data, formula.split("~")[0] + "~ 1", reml=False)
    full = fit_mixed(data, formula) if estimation == "reml" else full_ml
    lrt, df = 2 * (full_ml.llf - null_ml.llf), len(full_ml.fe_params) - 1
    weight, kind = _critical_weight_of(full, data, power)
    fits = {f"full ({estimation.upper()})": full, "full (ML)": full_ml, "intercept-only (ML)": null_ml}
    unconverged = [name for name, fit in fits.items() if not fit.converged]  # with ml, the first two are one
    return {
        "coefficients": fixed_effects(full),
        "lrt_statistic": lrt, "lrt_df": df, "lrt_p_value": chi2.sf(lrt, df),
        "critical_plw": weight, "critical_kind": kind, "n_observations": len(data),
        "note": (f"no optimizer converged for the {' and the '.join(unconverged)} model: read the LRT and the "
                 "critical PLW with care" if unconverged else ""),
        "estimation": estimation, "benchmark_variance": float(np.asarray(full.cov_re)[0, 0]),
        "residual_variance": full.scale, "loglik": full.llf, "ml_loglik": full_ml.llf, "null_ml_loglik": null_ml.llf,
    }


def bootstrap_critical_weight(data: pd.DataFrame, formula: str, power: float, samples: int, seed: int = 0,
                              reml: bool = True) -> tuple[float, float, int]:
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
            full = fit_mixed(resampled, formula, reml=reml)
        except FitError:  # a degenerate resample says nothing about λ; the interval uses the others
            failures += 1
            continue
        weights.append(_critical_weight_of(full, resampled, power)[0])
    if not weights:
        return np.nan, np.nan, failures
    low, high = np.percentile(weights, [2.5, 97.5])
    return float(low), float(high), failures


def regression_table(scores: pd.DataFrame, formula: str, power: float, bootstrap_samples: int,
                     estimation: str = "reml") -> pd.DataFrame:
    """Table 3, long: one row per (scope, term); per dataset pooled over models, and per (dataset, model)."""
    check_formula(formula, scores.columns)  # before any fit
    data = primary_scores(scores)
    rows = []
    scopes = [(dataset, "pooled", group) for dataset, group in data.groupby("dataset")]
    scopes += [(dataset, model, group) for (dataset, model), group in data.groupby(["dataset", "model"])]
    for dataset, model, group in scopes:
        try:
            summary = fit_summary(group, formula, power, estimation)
        except FitError as error:  # one scope that cannot be fitted must not hide the others
            rows.append({"dataset": dataset, "model": model, "n_observations": len(group),
                         "note": f"not estimable: {error}"})
            continue
        several_seeds = group["seed"].nunique() > 1
        low, high, failures = (bootstrap_critical_weight(group, formula, power, bootstrap_samples,
                                                         reml=estimation == "reml")
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
    """Table 3 for people: the fits, their notes, and the evaluations that the fits lack."""
    estimations = table["estimation"].dropna().unique()
    fitted_by = f", fitted by {ESTIMATION_TEXT[estimations[0]]}" if len(estimations) == 1 else ""
    lines = ["# Mixed-effects regression (Table 3)\n", f"`{formula}` with a random intercept per benchmark{fitted_by}; "
             f"wp = PLW^{power}. p: Wald test against the normal distribution (lmer reports t without p). "
             "σ²: variances of the benchmark intercepts and of the residuals. LRT: against the intercept-only model, "
             "both fitted by ML (as R's anova refits them). Scores are fractions (BLEU and chrF divided by 100).\n",
             "| dataset | model | term | estimate | SE | p | σ² benchmark | σ² residual | LRT χ² (df) | LRT p "
             "| critical PLW |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    notes = []
    for (dataset, model), fit in table.groupby(["dataset", "model"], sort=False):
        first = fit.iloc[0]
        if not is_estimable(fit):
            lines.append(f"| {dataset} | {model} | | | | | | | | | {first.note} |")
            continue
        if first.note:
            notes.append(f"- {dataset}, {model}: {first.note}.")
        weight = f"{first.critical_plw:.4g}" + (" (grid end)" if first.critical_kind == "grid end" else "")
        if not np.isnan(first.critical_plw_ci_low):
            weight += f" [{first.critical_plw_ci_low:.3g}, {first.critical_plw_ci_high:.3g}]"
        for index, row in enumerate(fit.itertuples()):
            fit_cells = (f"{first.benchmark_variance:.3g} | {first.residual_variance:.3g} | {first.lrt_statistic:.2f} "
                         f"({first.lrt_df}) | {first.lrt_p_value:.3g} | {weight}" if index == 0 else " | | | | ")
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
        for row in missing.assign(dataset=analysis_scope(missing)).itertuples():
            plw = "base" if pd.isna(row.plw) else row.plw
            lines.append(f"| {row.model} | {row.dataset} | {plw} | {row.seed} | {row.benchmark} | {row.status} |")
    return "\n".join(lines) + "\n"


def code_section(scores: pd.DataFrame) -> str:
    """Which code made the evaluations (their recorded commit): a reader must know when they differ."""
    made = scores[scores["status"] != "missing"]
    lines = ["\n## Code\n"]
    if "code_commit" not in made or made["code_commit"].isna().all():
        return "\n".join([*lines, "The evaluations do not record their code (made outside a git checkout).\n"])
    versions = (made.assign(code_commit=made["code_commit"].fillna("unknown"),
                            code_modified=made["code_modified"].fillna(False).astype(bool))
                .drop_duplicates([*CELL_KEYS, "benchmark"])
                .groupby(["code_commit", "code_modified"]).size())
    if len(versions) == 1:
        (commit, modified), = versions.index
        return "\n".join([*lines, f"Every evaluation was made by commit {commit[:12]}"
                          f"{' with modified code' if modified else ''}.\n"])
    lines.append("**The evaluations come from different code**; rerun those of older code to compare like with like "
                 "(README: what reruns after a change):\n")
    lines += [f"- {commit[:12]}{' (modified)' if modified else ''}: {count} evaluations"
              for (commit, modified), count in versions.items()]
    return "\n".join(lines) + "\n"
