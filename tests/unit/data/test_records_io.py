import json

import pytest

from rlkit.data.records import read_rows, write_parquet
from rlkit.errors import DataError


def test_jsonl_rows_are_numbered_by_line_and_blank_lines_skipped(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"q": "x"}\n\n{"q": "y"}\n')
    rows = read_rows(path)
    assert [row.fields for row in rows] == [{"q": "x"}, {"q": "y"}]
    assert [row.location for row in rows] == [f"{path} line 1", f"{path} line 3"]


def test_json_list_and_parquet_rows_are_numbered_from_zero(tmp_path):
    records = [{"q": "x", "a": 1}, {"q": "y", "a": 2}]
    json_path = tmp_path / "d.json"
    json_path.write_text(json.dumps(records))
    parquet_path = write_parquet(records, tmp_path / "d.parquet")
    for path in (json_path, parquet_path):
        rows = read_rows(path)
        assert [row.fields for row in rows] == records
        assert rows[1].location == f"{path} row 1"


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_rows(tmp_path / "nope.jsonl")
    csv = tmp_path / "d.csv"
    csv.write_text("q,a\n")
    with pytest.raises(DataError, match=r"extension '\.csv'.*\.jsonl, \.json, \.parquet"):
        read_rows(csv)


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"q": "x"}\n{"q": \n')
    with pytest.raises(DataError, match=rf"{path} line 2 is not valid JSON"):
        read_rows(path)


def test_json_must_be_a_list_of_objects(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"q": "x"}')
    with pytest.raises(DataError, match="must hold a list of records"):
        read_rows(path)
    path.write_text('[{"q": "x"}, 3]')
    with pytest.raises(DataError, match=rf"{path} row 1 is a int, not an object"):
        read_rows(path)


def test_damaged_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable parquet file"):
        read_rows(path)


def test_require_names_row_keys_and_fix(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "x", "answer": "1"}\n')
    (row,) = read_rows(path)
    assert row.require("question", "unused") == "x"
    with pytest.raises(DataError) as error:
        row.require("prompt", "set data.prompt_key to the key that holds the prompt")
    assert str(error.value) == (
        f"{path} line 1 has no key 'prompt' (it has: answer, question); "
        "set data.prompt_key to the key that holds the prompt"
    )


def test_write_parquet_refuses_records_of_mixed_types(tmp_path):
    with pytest.raises(DataError, match="do not form one table"):
        write_parquet([{"a": 1}, {"a": "x"}], tmp_path / "d.parquet")
