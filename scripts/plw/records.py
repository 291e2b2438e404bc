"""Load instruction records from JSON, JSONL, Parquet or the Hub and normalize them into one schema.

The normalized table has string columns id, instruction, input (may be empty), output (may be empty: Alpaca
trains such a record on the EOS token alone). Malformed records are counted per reason; the caller either stops
at the first (naming its index and reason) or drops them.
"""

import json
from collections import Counter
from pathlib import Path

import pandas as pd

COLUMNS = ("id", "instruction", "input", "output")


class BadRecordError(ValueError):
    """A malformed record, named by its index in the source and the reason."""


def read_records(path: str | Path) -> list:
    """A JSON array of records, JSON Lines, or a Parquet table, chosen by the file extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()  # keeps nulls as None and integers as int (pandas would not)
    content = path.read_bytes()
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        line = content[:error.start].count(b"\n") + 1
        raise BadRecordError(f"{path}: line {line} (byte {error.start}) is not valid UTF-8: {error.reason}") from None
    if suffix == ".jsonl":
        records = []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise BadRecordError(f"{path}: line {line_number} is not valid JSON: {error}") from None
        return records
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadRecordError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(records, list):
        raise BadRecordError(f"{path}: expected a JSON array of records, found {type(records).__name__}")
    return records


def read_hub_records(dataset_id: str, split: str, revision: str | None = None) -> list:
    from datasets import load_dataset

    return load_dataset(dataset_id, split=split, revision=revision).to_list()


def source_records(spec: dict, file: str | Path | None = None) -> tuple[list, str]:
    """A dataset entry's records (its first `max_records`) and where they come from: `file` (a local or downloaded
    file) or else the entry's Hub dataset."""
    if file is not None:
        records, source = read_records(file), str(file)
    else:
        records = read_hub_records(spec["hub"], spec["split"], spec.get("revision"))
        source = f"{spec['hub']} (split {spec['split']})"
    return records[:spec.get("max_records")], source


def problem(record, columns: dict) -> str | None:
    """Why a record is malformed, or None. Reasons: not an object, missing X, non-string X."""
    if not isinstance(record, dict):
        return "not an object"
    for field in ("instruction", "output"):
        if record.get(columns[field]) is None:
            return f"missing {field}"
    for field in ("instruction", "input", "output"):
        value = record.get(columns[field])
        if value is not None and not isinstance(value, str):
            return f"non-string {field}"
    return None


def is_empty_completion(outputs: pd.Series) -> pd.Series:
    """Which completions are empty or blank."""
    return outputs.str.strip() == ""


def empty_completions(table: pd.DataFrame) -> int:
    """Records whose completion is empty or blank: valid (the completion is the EOS token alone), but counted."""
    return int(is_empty_completion(table["output"]).sum())


def normalize(records: list, *, columns: dict | None = None, source: str = "records",
              drop_bad: bool = False, drop_setting: str = "bad_records") -> tuple[pd.DataFrame, Counter]:
    """The normalized table and the count of bad records per reason.

    With drop_bad False the first bad record raises BadRecordError naming `source`, its index and reason, and the
    config key (`drop_setting`) that would drop such records.
    """
    columns = {field: field for field in COLUMNS} | (columns or {})
    rows, bad = [], Counter()
    for index, record in enumerate(records):
        reason = problem(record, columns)
        if reason:
            if not drop_bad:
                raise BadRecordError(f"{source}: record {index}: {reason} "
                                     f"(set `{drop_setting}: drop` in the config to drop such records)")
            bad[reason] += 1
            continue
        record_id = record.get(columns["id"])
        rows.append({
            "id": str(index if record_id is None else record_id),
            "instruction": record[columns["instruction"]],
            "input": record.get(columns["input"]) or "",
            "output": record[columns["output"]],
        })
    return pd.DataFrame(rows, columns=list(COLUMNS), dtype="string"), bad


def normalize_or_stop(records: list, *, columns: dict | None, source: str, drop_bad: bool,
                      drop_setting: str = "bad_records") -> pd.DataFrame:
    """normalize, for a rule: the dropped records counted in its log (stdout), a table left empty refused."""
    table, bad = normalize(records, columns=columns, source=source, drop_bad=drop_bad, drop_setting=drop_setting)
    for reason, count in sorted(bad.items()):
        print(f"dropped {count} records: {reason}")
    if table.empty:
        raise SystemExit(f"{source}: no records" + (" left after dropping the bad ones" if bad else ""))
    return table
