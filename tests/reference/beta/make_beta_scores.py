"""Write the simulated scores that the beta model's tests fit: python tests/reference/beta/make_beta_scores.py.

Scores from the beta mixed model itself: logit μ = b0 + b1·wp + b2·wp² + u_benchmark, u ~ N(0, 0.4²), score ~
Beta(μφ, (1−μ)φ) with φ = 50, wp = PLW^0.30103, 8 benchmarks on the paper's 10 PLW values, one seed. Committed as
CSV (rounded to 1e-9) so that the tests' data do not change with numpy's random streams. Deterministic.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

HERE = Path(__file__).resolve().parent
POWER = 0.30103
PLW_GRID = [0, 0.0005, 0.002236, 0.01, 0.02463, 0.05, 0.1, 0.2463, 0.5, 1]
QUADRATIC = (-0.3, 1.5, -1.25)  # vertex at wp = 0.6: λ = 0.6 ** (1 / 0.30103) ≈ 0.18
N_BENCHMARKS, BENCHMARK_SD, PRECISION = 8, 0.4, 50.0


def simulate(rng: np.random.Generator, dataset: str, b: tuple[float, float, float], models=("m1",),
             plws=PLW_GRID) -> pd.DataFrame:
    """One row per (model, plw, benchmark); the benchmark intercepts are shared by the models, as the pooled fit's
    random intercept assumes."""
    intercepts = rng.normal(0, BENCHMARK_SD, N_BENCHMARKS)
    rows = []
    for model in models:
        for plw in plws:
            wp = plw ** POWER
            for index, u in enumerate(intercepts):
                mean = expit(b[0] + b[1] * wp + b[2] * wp ** 2 + u)
                score = rng.beta(mean * PRECISION, (1 - mean) * PRECISION)
                rows.append(dict(model=model, dataset=dataset, plw=plw, seed=1, benchmark=f"bench{index}", wp=wp,
                                 score=round(score, 9)))
    return pd.DataFrame(rows)


def main() -> None:
    rng = np.random.default_rng(20240502)
    edges = simulate(rng, "edges", QUADRATIC)
    # a benchmark that no model solves at PLW 0, one that every model solves at PLW 1: the beta model excludes both
    edges.loc[0, "score"], edges.loc[len(edges) - 1, "score"] = 0.0, 1.0
    scores = pd.concat([
        simulate(rng, "quadratic", QUADRATIC),
        simulate(rng, "flat", (0.2, 0.0, 0.0)),  # no effect of the PLW
        simulate(rng, "two_models", QUADRATIC, models=("m1", "m2")),
        # rising and convex over a grid without 0 and 1: λ is the highest trained PLW
        simulate(rng, "rising", (-0.5, 0.8, 0.3), plws=[plw for plw in PLW_GRID if 0.01 <= plw <= 0.5]),
        edges,
    ], ignore_index=True)
    scores.to_csv(HERE / "beta_scores.csv", index=False)


if __name__ == "__main__":
    main()
