"""The beta mixed model (scripts/beta_regression.R, R's glmmTMB) on the primary scores, as Parquet and Markdown.

Debian's R has no Parquet reader, so this hands R the primary scores (the rows the linear fit uses) as CSV and
writes its table (JSON, one array per column, which keeps numbers, text and missing values apart) as Parquet
beside its Markdown, both only once R has made both.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from plw.analysis import primary_scores
from plw.io import write_parquet, write_text

COLUMNS = ["model", "dataset", "plw", "seed", "benchmark", "wp", "score"]

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--scores", required=True)
parser.add_argument("--wp-power", type=float, required=True)
parser.add_argument("--parquet", required=True)
parser.add_argument("--markdown", required=True)
args = parser.parse_args()

with tempfile.TemporaryDirectory() as work:
    work = Path(work)
    primary_scores(pd.read_parquet(args.scores))[COLUMNS].to_csv(work / "scores.csv", index=False)
    fitted = subprocess.run(["Rscript", str(Path(__file__).with_suffix(".R")), "--scores", str(work / "scores.csv"),
                             "--wp-power", str(args.wp_power), "--table", str(work / "table.json"),
                             "--markdown", str(work / "table.md")], check=False)
    if fitted.returncode:
        sys.exit(f"scripts/beta_regression.R failed ({fitted.returncode}); its messages are above")
    table = pd.DataFrame(json.loads((work / "table.json").read_text(encoding="utf-8")))
    markdown = (work / "table.md").read_text(encoding="utf-8")
write_parquet(table, args.parquet)
write_text(markdown, args.markdown)
print(markdown)
