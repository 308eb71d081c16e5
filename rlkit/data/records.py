"""Read and write record files (.jsonl, .json, .parquet) as rows that remember where they came from.

Every row carries a ``location`` ("data/train.jsonl line 12", "data/train.parquet row 3") so that any
later error about it can name the file and the row. JSON Lines rows are numbered by line (from 1, as
editors show them); .json and .parquet rows by position (from 0, as pandas and pyarrow index them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkit.errors import DataError

RECORD_EXTENSIONS = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class Row:
    """One record and where it is."""

    location: str
    fields: dict[str, Any]

    def require(self, key: str, fix: str) -> Any:
        """The value under ``key``; a missing key is a DataError naming the row's keys and ``fix``."""
        if key not in self.fields:
            raise DataError(
                f"{self.location} has no key '{key}' (it has: {', '.join(sorted(self.fields)) or 'no keys'}); {fix}"
            )
        return self.fields[key]


def read_rows(path: str | Path) -> list[Row]:
    """Every record of a .jsonl, .json (a list of objects) or .parquet file, in file order."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"data file {path} is a directory; list the data files in it one by one")
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    if path.suffix == ".jsonl":
        rows = _read_jsonl(path)
    elif path.suffix == ".json":
        rows = _read_json(path)
    elif path.suffix == ".parquet":
        rows = _read_parquet(path)
    else:
        raise DataError(f"data file {path} has extension '{path.suffix}'; rlkit reads {', '.join(RECORD_EXTENSIONS)}")
    for row in rows:
        if not isinstance(row.fields, dict):
            raise DataError(f"{row.location} is a {type(row.fields).__name__}, not an object with keys")
    return rows


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    with path.open("rb") as lines:
        for line_number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path} line {line_number} is not UTF-8 text ({error.reason}); save the file as UTF-8"
                ) from None
            if not line.strip():
                continue  # blank lines (a trailing newline, say) are not records
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path} line {line_number} is not valid JSON: {error.msg}") from None
            rows.append(Row(f"{path} line {line_number}", record))
    return rows


def _read_json(path: Path) -> list[Row]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON (line {error.lineno}): {error.msg}") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8") from None
    if not isinstance(records, list):
        raise DataError(
            f"{path} holds a JSON {type(records).__name__}; a .json data file must hold a list of records "
            "(use .jsonl for one record per line)"
        )
    return [Row(f"{path} row {index}", record) for index, record in enumerate(records)]


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq  # imported here: only parquet users pay for it

    try:
        records = pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path} is not a readable parquet file: {error}") from None
    return [Row(f"{path} row {index}", record) for index, record in enumerate(records)]


def write_parquet(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Write records as one parquet table (columns from the records' keys); returns the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise DataError(f"cannot write {path}: the records do not form one table ({error})") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path
