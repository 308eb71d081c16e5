import json

import pytest
from click.testing import CliRunner

from helpers import REPO
from rlkit.cli.data import data_group
from rlkit.config.schema import DataConfig
from rlkit.data import load_prompt_dataset
from rlkit.data.gsm8k import convert_gsm8k, gsm8k_final_answer
from rlkit.data.records import read_rows
from rlkit.errors import DataError

GSM8K = REPO / "datasets" / "gsm8k"  # the repository's copy of GSM8K (MIT license)
QUESTION = "how many clips did natalia sell ?"
ANSWER = "48+24 = <<48+24=72>>72 clips, and 1,128 more.\n#### 1,200"


def write_gsm8k(folder, splits=("train", "test")):
    folder.mkdir(exist_ok=True)
    for split in splits:
        (folder / f"{split}.jsonl").write_text(json.dumps({"question": QUESTION, "answer": ANSWER}) + "\n")
    return folder


def test_final_answer_drops_commas():
    assert gsm8k_final_answer("x\n#### 1,200", "f line 1") == "1200"
    assert gsm8k_final_answer("#### -3.5", "f line 1") == "-3.5"
    with pytest.raises(DataError, match="f line 1: the answer has no '#### N'"):
        gsm8k_final_answer("72", "f line 1")


def test_convert_writes_verl_rows(tmp_path):
    written = convert_gsm8k(write_gsm8k(tmp_path / "in"), tmp_path / "out")
    assert written == {
        "train": (1, tmp_path / "out" / "train.parquet"),
        "test": (1, tmp_path / "out" / "test.parquet"),
    }
    (row,) = read_rows(tmp_path / "out" / "test.parquet")
    assert row.fields == {
        "data_source": "openai/gsm8k",
        "prompt": [
            {
                "role": "user",
                "content": QUESTION + ' Let\'s think step by step and output the final answer after "####".',
            }
        ],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "1200"},
        "extra_info": {"split": "test", "index": 0, "answer": ANSWER, "question": QUESTION},
    }


def test_converted_file_loads_as_verl_schema(tmp_path, tokenizer):
    convert_gsm8k(write_gsm8k(tmp_path / "in", splits=("train",)), tmp_path / "out")
    (record,) = load_prompt_dataset([str(tmp_path / "out" / "train.parquet")], DataConfig(), tokenizer)
    assert record.ground_truth == "1200" and record.data_source == "openai/gsm8k"
    assert record.prompt_text.startswith("<|im_start|>user\nhow many clips")


def test_folder_without_splits_or_with_bad_rows(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither train.jsonl nor test.jsonl"):
        convert_gsm8k(tmp_path / "empty", tmp_path / "out")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text(json.dumps({"prompt": "q", "answer": "#### 1"}) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl line 1 has no key 'question' \(it has: answer, prompt\)"):
        convert_gsm8k(bad, tmp_path / "out")


def test_cli_gsm8k_prints_what_it_wrote(tmp_path):
    result = CliRunner().invoke(
        data_group, ["gsm8k", "--input", str(write_gsm8k(tmp_path / "in")), "--output", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote 1 train rows to {tmp_path / 'out' / 'train.parquet'}" in result.output
    assert f"wrote 1 test rows to {tmp_path / 'out' / 'test.parquet'}" in result.output


def test_cli_gsm8k_bad_input_raises_data_error(tmp_path):
    result = CliRunner().invoke(data_group, ["gsm8k", "--input", str(tmp_path), "--output", str(tmp_path / "o")])
    assert isinstance(result.exception, DataError)


def test_the_repository_copy_of_gsm8k_converts_whole(tmp_path):
    written = convert_gsm8k(GSM8K, tmp_path / "out")
    assert {split: num_rows for split, (num_rows, _) in written.items()} == {"train": 7473, "test": 1319}
    for _, path in written.values():
        rows = read_rows(path)
        assert all(row.fields["reward_model"]["ground_truth"].lstrip("-").replace(".", "").isdigit() for row in rows)
    first = read_rows(written["test"][1])[0].fields  # Janet's ducks: 16 - 3 - 4 = 9 eggs at $2
    assert first["reward_model"]["ground_truth"] == "18" and first["extra_info"]["question"].startswith("Janet")
