"""Download an Alpaca-format JSON file and verify its git blob id (a localrule: login nodes have internet)."""

import argparse

from plw.download import fetch, verify_blob
from plw.io import atomic_path

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--url", required=True)
parser.add_argument("--git-blob", required=True)
parser.add_argument("--output", required=True)
args = parser.parse_args()

content = fetch(args.url)
verify_blob(content, args.git_blob, args.url)
with atomic_path(args.output) as tmp:
    tmp.write_bytes(content)
print(f"{args.url}: {len(content)} bytes, git blob {args.git_blob} verified")
