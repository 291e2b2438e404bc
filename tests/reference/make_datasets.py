"""Write the small synthetic score tables that lme4_reference.R fits: python tests/reference/make_datasets.py.

Paper-like scores: a small quadratic effect of wp = PLW^0.30103, a random intercept per benchmark that is large
against the residual noise, accuracies in [0.2, 0.8] beside BLEU. Deterministic (a fixed numpy seed).
"""

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
POWER = 0.30103
PLW_GRID = [0, 0.0005, 0.002236, 0.01, 0.02463, 0.05, 0.1, 0.2463, 0.5, 1]
ACCURACY_MEANS = [0.25, 0.42, 0.61, 0.8]
BLEU_MEANS = [18.0, 24.0, 31.0, 39.0]  # on BLEU's 0-100 scale


def scores(rng: np.random.Generator, models: dict[str, tuple[float, float]], seeds: list[int],
           bleu_scale: float, noise: float) -> pd.DataFrame:
    """One row per (model, plw, seed, benchmark): benchmark mean + slope·wp + curvature·wp² + noise."""
    means = {f"acc{index}": mean for index, mean in enumerate(ACCURACY_MEANS)}
    means |= {f"bleu{index}": mean * bleu_scale / 100 for index, mean in enumerate(BLEU_MEANS)}
    rows = []
    for model, (slope, curvature) in models.items():
        for plw in PLW_GRID:
            wp = plw ** POWER
            for seed in seeds:
                for benchmark, mean in means.items():
                    score = mean + slope * wp + curvature * wp ** 2 + rng.normal(0, noise)
                    rows.append(dict(model=model, dataset="d1", plw=plw, seed=seed, benchmark=benchmark, wp=wp,
                                     score=round(score, 6)))
    return pd.DataFrame(rows)


def main() -> None:
    rng = np.random.default_rng(20240501)
    datasets = {
        # (a) BLEU on 0-100 beside accuracies: benchmark variance ~10^6 times the residual
        "bleu_percent": scores(rng, {"m1": (0.06, -0.05)}, [1], bleu_scale=100, noise=0.01),
        # (b) the same design with BLEU as a fraction
        "bleu_fraction": scores(rng, {"m1": (0.06, -0.05)}, [1], bleu_scale=1, noise=0.01),
        # (c) two models, three seeds, unbalanced (a few evaluations missing)
        "two_models": scores(rng, {"m1": (0.3, -0.25), "m2": (0.1, -0.12)}, [1, 2, 3], bleu_scale=1, noise=0.02),
    }
    datasets["two_models"] = datasets["two_models"].drop(index=[5, 77, 140, 141, 299])
    for name, frame in datasets.items():
        frame.to_csv(HERE / f"{name}.csv", index=False)


if __name__ == "__main__":
    main()
