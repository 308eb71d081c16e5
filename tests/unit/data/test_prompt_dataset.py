import json
import logging

import pytest

from rlkit.config.schema import DataConfig
from rlkit.data import PromptRecord, load_prompt_dataset
from rlkit.data.records import write_parquet
from rlkit.errors import ConfigError, DataError

CHAT_A = "<|im_start|>user\nrepeat the letter a<|im_end|>\n<|im_start|>assistant\n"


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def verl_row(content, truth, source="openai/gsm8k", index=0):
    return {
        "data_source": source,
        "prompt": [{"role": "user", "content": content}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": truth},
        "extra_info": {"split": "train", "index": index},
    }


def test_builtin_letters_rendered_with_the_chat_template(tokenizer):
    dataset = load_prompt_dataset(["builtin:letters"], DataConfig(), tokenizer)
    assert len(dataset) == 200 and dataset.num_filtered == 0
    first = dataset[0]
    assert isinstance(first, PromptRecord)
    letter = first.ground_truth
    assert first.prompt_text == CHAT_A.replace("letter a", f"letter {letter}")
    assert len(first.prompt_ids) == 9  # see conftest: 9 tokens
    assert first.data_source == "letters" and first.extra_info == {}
    assert [record.index for record in dataset] == list(range(200))


def test_flat_jsonl_with_configured_keys(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "what is one plus one ?", "answer": "1+1 #### 2"}])
    cfg = DataConfig(prompt_key="question", answer_key="answer", prompt_format="raw")
    (record,) = load_prompt_dataset([path], cfg, tokenizer)
    assert record.prompt_text == "what is one plus one ?"
    assert len(record.prompt_ids) == 6
    assert record.ground_truth == "1+1 #### 2"
    assert record.data_source == "gsm"  # the file's stem
    cfg = DataConfig(prompt_key="question", data_source="openai/gsm8k")
    assert load_prompt_dataset([path], cfg, tokenizer)[0].data_source == "openai/gsm8k"


def test_missing_key_names_file_row_keys_and_config_field(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "q", "answer": "1"}])
    with pytest.raises(DataError) as error:
        load_prompt_dataset([path], DataConfig(), tokenizer)
    assert str(error.value) == (
        f"{path} line 1 has no key 'prompt' (it has: answer, question); "
        "set data.prompt_key to the key that holds the prompt"
    )
    with pytest.raises(DataError, match="line 1 has no key 'solution'.*set data.answer_key"):
        load_prompt_dataset([path], DataConfig(prompt_key="question", answer_key="solution"), tokenizer)


def test_verl_parquet_is_detected_and_read_as_is(tmp_path, tokenizer):
    rows = [verl_row("repeat the letter a", "a"), verl_row("hi", "7", index=1)]
    path = str(write_parquet(rows, tmp_path / "t.parquet"))
    dataset = load_prompt_dataset([path], DataConfig(), tokenizer)
    assert len(dataset) == 2
    assert dataset[0].prompt_text == CHAT_A
    assert dataset[1].ground_truth == "7"
    assert dataset[1].data_source == "openai/gsm8k"
    assert dataset[1].extra_info == {"split": "train", "index": 1}


def test_verl_row_without_ground_truth(tmp_path, tokenizer):
    row = verl_row("hi", "7")
    row["reward_model"] = {"style": "rule"}
    path = str(write_parquet([row], tmp_path / "t.parquet"))
    with pytest.raises(DataError, match=r"row 0 has no reward_model.ground_truth"):
        load_prompt_dataset([path], DataConfig(schema="verl"), tokenizer)


def test_message_keys_that_parquet_fills_with_null_are_dropped(tmp_path, make_tokenizer):
    row = verl_row("hi", "1")
    row["prompt"] = [{"role": "user", "content": "hi", "name": None}]
    path = str(write_parquet([row], tmp_path / "t.parquet"))
    # Without the drop, "name": None would be defined and print NAMED.
    template = "{% for m in messages %}{% if m.name is defined %}NAMED {% endif %}{{ m.content }}{% endfor %}"
    tokenizer = make_tokenizer(template)
    assert load_prompt_dataset([path], DataConfig(), tokenizer)[0].prompt_text == "hi"


def test_json_and_several_files_and_max_samples(tmp_path, tokenizer):
    first = tmp_path / "a.json"
    first.write_text(json.dumps([{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}]))
    second = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "c", "answer": "3"}])
    cfg = DataConfig(prompt_format="raw")
    dataset = load_prompt_dataset([str(first), second], cfg, tokenizer)
    assert [record.ground_truth for record in dataset] == ["1", "2", "3"]
    assert [record.data_source for record in dataset] == ["a", "a", "b"]
    limited = load_prompt_dataset([str(first), second], cfg, tokenizer, max_samples=2)
    assert [record.ground_truth for record in limited] == ["1", "2"]


def test_overlong_prompts_are_filtered_and_counted(tmp_path, tokenizer, caplog):
    # raw token counts: "a" 1, "a b c" 3, "a b c d e" 5
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": p, "answer": "x"} for p in ["a", "a b c", "a b c d e"]])
    cfg = DataConfig(prompt_format="raw", max_prompt_length=3)
    with caplog.at_level(logging.WARNING, logger="rlkit.data.prompts"):
        dataset = load_prompt_dataset([path], cfg, tokenizer)
    assert [record.prompt_text for record in dataset] == ["a", "a b c"]
    assert [record.index for record in dataset] == [0, 1]
    assert dataset.num_filtered == 1
    assert "dropped 1 of 3 prompts" in caplog.text


def test_all_prompts_overlong_is_an_error(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a b c", "answer": "x"}])
    with pytest.raises(DataError, match="all 1 prompts .* longer than data.max_prompt_length=2"):
        load_prompt_dataset([path], DataConfig(prompt_format="raw", max_prompt_length=2), tokenizer)


def test_truncation_when_not_filtering(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a b c d e", "answer": "x"}])
    base = {"prompt_format": "raw", "max_prompt_length": 2, "filter_overlong_prompts": False}
    left = load_prompt_dataset([path], DataConfig(**base, truncation="left"), tokenizer)[0]
    right = load_prompt_dataset([path], DataConfig(**base, truncation="right"), tokenizer)[0]
    assert tokenizer.convert_ids_to_tokens(left.prompt_ids) == ["d", "e"]
    assert tokenizer.convert_ids_to_tokens(right.prompt_ids) == ["a", "b"]
    assert left.prompt_text == "d e"
    with pytest.raises(DataError, match=rf"{path} line 1: the prompt has 5 tokens.*data.truncation=left"):
        load_prompt_dataset([path], DataConfig(**base), tokenizer)


def test_system_prompt_and_raw_default_without_template(tmp_path, tokenizer, plain_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "hi", "answer": "x"}])
    record = load_prompt_dataset([path], DataConfig(system_prompt="you are helpful"), tokenizer)[0]
    assert record.prompt_text.startswith("<|im_start|>system\nyou are helpful<|im_end|>")
    assert load_prompt_dataset([path], DataConfig(), plain_tokenizer)[0].prompt_text == "hi"
    with pytest.raises(ConfigError, match="no chat_template"):
        load_prompt_dataset([path], DataConfig(prompt_format="chat"), plain_tokenizer)


def test_empty_inputs_are_errors(tmp_path, tokenizer):
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match=rf"{empty} has no records"):
        load_prompt_dataset([str(empty)], DataConfig(), tokenizer)
    with pytest.raises(DataError, match="no data files given"):
        load_prompt_dataset([], DataConfig(), tokenizer)


def test_prompt_of_wrong_type(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": 3, "answer": "x"}])
    with pytest.raises(DataError, match="line 1: 'prompt' must be text or a list of"):
        load_prompt_dataset([path], DataConfig(), tokenizer)


def test_failing_chat_template_names_the_row(tmp_path, make_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "hi", "answer": "x"}])
    tokenizer = make_tokenizer("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(DataError, match=r"line 1: the chat template failed on this prompt.*roles must alternate"):
        load_prompt_dataset([path], DataConfig(), tokenizer)
