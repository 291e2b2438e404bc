"""Normalize one dataset (local file, verified download or Hub id) into id/instruction/input/output Parquet."""

import argparse
import json

from plw.io import write_parquet
from plw.records import empty_completions, normalize_or_stop, source_records

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--name", required=True)
parser.add_argument("--spec", required=True, help="the dataset's config entry, as JSON")
parser.add_argument("--file", help="the local or downloaded file, when the source is a file")
parser.add_argument("--bad-records", choices=["error", "drop"], default="error")
parser.add_argument("--output", required=True)
args = parser.parse_args()
spec = json.loads(args.spec)

records, source = source_records(spec, args.file)

table = normalize_or_stop(records, columns=spec.get("columns"), source=f"dataset {args.name}: {source}",
                          drop_bad=args.bad_records == "drop")
write_parquet(table, args.output)
print(f"dataset {args.name}: {len(table)} records from {source}, {empty_completions(table)} with an empty "
      "completion (trained on the EOS token alone, as Alpaca does)")
