"""Fetch one judged benchmark's records (a verified download, a local file or a Hub dataset) and normalize them into
id/instruction/input/output Parquet, `output` being the reference answer the judge compares each cell with."""

import argparse
import json
import tempfile
from pathlib import Path

from plw.download import fetch, verify_blob
from plw.io import write_parquet
from plw.records import normalize_or_stop, source_records

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--name", required=True)
parser.add_argument("--spec", required=True, help="the judged benchmark's data entry, as JSON")
parser.add_argument("--output", required=True)
args = parser.parse_args()
spec = json.loads(args.spec)

if "url" in spec:
    content = fetch(spec["url"])
    verify_blob(content, spec["git_blob"], spec["url"])
    with tempfile.TemporaryDirectory() as directory:  # read_records chooses the format by the file's suffix
        downloaded = Path(directory) / Path(spec["url"].split("?")[0]).name
        downloaded.write_bytes(content)
        records, _ = source_records(spec, downloaded)
    source = spec["url"]
else:
    records, source = source_records(spec, spec.get("path"))

table = normalize_or_stop(records, columns=spec.get("columns"), source=f"judged benchmark {args.name}: {source}",
                          drop_bad=spec.get("bad_records") == "drop",
                          drop_setting=f"judged_benchmarks.{args.name}.data.bad_records")
write_parquet(table, args.output)
print(f"judged benchmark {args.name}: {len(table)} instructions with reference outputs from {source}")
