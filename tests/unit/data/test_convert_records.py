import json

import pytest
from click.testing import CliRunner

from rlkit.cli.data import data_group
from rlkit.data.convert import convert_to_verl
from rlkit.data.records import read_rows
from rlkit.errors import DataError


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "mydata.jsonl"
    rows = [{"problem": "1+1?", "solution": "2"}, {"problem": "2+2?", "solution": "4"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_keys_are_mapped_into_verl_schema(source, tmp_path):
    output = tmp_path / "out.parquet"
    assert convert_to_verl(source, output, "problem", "solution", template="Solve: {prompt} Put it in \\boxed{}.") == 2
    first, second = read_rows(output)
    assert first.fields == {
        "data_source": "mydata",  # the input file's stem
        "prompt": [{"role": "user", "content": "Solve: 1+1? Put it in \\boxed{}."}],
        "reward_model": {"style": "rule", "ground_truth": "2"},
        "extra_info": {"index": 0},
    }
    assert second.fields["extra_info"] == {"index": 1}


def test_data_source_and_no_template(source, tmp_path):
    output = tmp_path / "out.parquet"
    convert_to_verl(source, output, "problem", "solution", data_source="math")
    (row, _) = read_rows(output)
    assert row.fields["data_source"] == "math"
    assert row.fields["prompt"][0]["content"] == "1+1?"


def test_bad_arguments(source, tmp_path):
    with pytest.raises(DataError, match="must end in .parquet"):
        convert_to_verl(source, tmp_path / "out.jsonl", "problem", "solution")
    with pytest.raises(DataError, match="no {prompt} placeholder"):
        convert_to_verl(source, tmp_path / "out.parquet", "problem", "solution", template="Solve it")
    with pytest.raises(DataError, match=r"line 1 has no key 'question' .*pass --prompt-key"):
        convert_to_verl(source, tmp_path / "out.parquet", "question", "solution")


def test_cli_convert(source, tmp_path):
    output = tmp_path / "out.parquet"
    args = [
        "convert",
        "--input",
        str(source),
        "--output",
        str(output),
        "--prompt-key",
        "problem",
        "--answer-key",
        "solution",
        "--data-source",
        "math",
        "--template",
        "Q: {prompt}",
    ]
    result = CliRunner().invoke(data_group, args)
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote 2 rows to {output}\n"
    assert read_rows(output)[0].fields["prompt"][0]["content"] == "Q: 1+1?"
    result = CliRunner().invoke(data_group, [*args[:5], "--prompt-key", "nope", "--answer-key", "solution"])
    assert isinstance(result.exception, DataError)
