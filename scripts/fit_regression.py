"""Table 3: the mixed-effects regression of score on wp and wp², per dataset and per (dataset, model)."""

import argparse

import pandas as pd

from plw.analysis import (
    ESTIMATIONS,
    FormulaError,
    check_formula,
    code_section,
    missing_cells,
    regression_markdown,
    regression_table,
)
from plw.io import write_parquet, write_text

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--scores", required=True)
parser.add_argument("--formula", required=True)
parser.add_argument("--estimation", choices=ESTIMATIONS, default="reml",
                    help="coefficients, SEs and p-values of the REML fit (as R's lmer) or of the ML fit; "
                         "the LRT compares ML fits either way")
parser.add_argument("--wp-power", type=float, required=True)
parser.add_argument("--bootstrap-samples", type=int, default=1000)
parser.add_argument("--parquet", required=True)
parser.add_argument("--markdown", required=True)
args = parser.parse_args()

try:
    check_formula(args.formula)  # the static check first, then against the scores' columns
    scores = pd.read_parquet(args.scores)
    check_formula(args.formula, scores.columns)
except FormulaError as error:
    raise SystemExit(f"analysis.formula: {error}") from None
table = regression_table(scores, args.formula, args.wp_power, args.bootstrap_samples, args.estimation)
markdown = regression_markdown(table, missing_cells(scores), args.formula, args.wp_power) + code_section(scores)
# written only once both are made: a failed job leaves the previous table and markdown in place
write_parquet(table, args.parquet)
write_text(markdown, args.markdown)
print(markdown)
