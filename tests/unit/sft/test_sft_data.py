"""SFT samples: rendering, training masks, dotted keys, truncation, errors and the Batch layout.

Token counts use the word-level tokenizer of conftest.py (one token per word or special token; newlines
vanish). Ids: [PAD]=1 <|im_start|>=2 <|im_end|>=3 a=4.
"""

import json

import pytest
import torch

from rlkit.config.schema import DataConfig
from rlkit.config.sft import SFTDataConfig
from rlkit.data.gsm8k import convert_gsm8k
from rlkit.data.prompts import load_prompt_dataset
from rlkit.data.records import write_parquet
from rlkit.data.sft import SFTSample, collate_sft, load_sft_dataset, without_loss
from rlkit.errors import ConfigError, DataError

IM_START, IM_END, A = 2, 3, 4


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def tokens(tokenizer, ids):
    return tokenizer.convert_ids_to_tokens(ids)


def test_prompt_response_sample_has_the_rl_prompt_ids_and_trains_to_eos(tmp_path, word_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "repeat the letter a", "response": "a a a"}])
    (sample,) = load_sft_dataset([path], SFTDataConfig(), word_tokenizer)
    rl_prompt = load_prompt_dataset([path], DataConfig(answer_key="response"), word_tokenizer)[0]
    assert sample.prompt_ids == rl_prompt.prompt_ids  # the very prompt `rlkit train` would show
    # <|im_start|> user repeat the letter a <|im_end|> <|im_start|> assistant
    assert len(sample.prompt_ids) == 9
    # "a a a<|im_end|>" is trained on; the template's "\n" after <|im_end|> would be context
    assert sample.response_ids == [A, A, A, IM_END]
    assert sample.response_mask == [1, 1, 1, 1]
    assert sample.location == f"{path} line 1"


def test_messages_train_every_assistant_turn_and_nothing_else(tmp_path, word_tokenizer):
    conversation = [
        {"role": "system", "content": "hi"},
        {"role": "user", "content": "how are you"},
        {"role": "assistant", "content": "fine thanks"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "bye"},
        {"role": "user", "content": "q"},  # after the last assistant turn: nothing to learn, left out
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": conversation}])
    (sample,) = load_sft_dataset([path], SFTDataConfig(), word_tokenizer)  # format auto -> messages
    # prompt: <s> system hi <e> <s> user how are you <e> <s> assistant (12 tokens)
    assert tokens(word_tokenizer, sample.prompt_ids) == [
        "<|im_start|>", "system", "hi", "<|im_end|>", "<|im_start|>", "user", "how", "are", "you", "<|im_end|>",
        "<|im_start|>", "assistant"]
    assert tokens(word_tokenizer, sample.response_ids) == [
        "fine", "thanks", "<|im_end|>",                                       # turn 1: trained
        "<|im_start|>", "user", "bye", "<|im_end|>", "<|im_start|>", "assistant",  # context
        "bye", "<|im_end|>"]                                                  # turn 2: trained
    assert sample.response_mask == [1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1]


def test_prompt_messages_with_earlier_assistant_turns_train_only_the_response(tmp_path, word_tokenizer):
    few_shot = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hi there"},
                {"role": "user", "content": "repeat the letter b"}]
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": few_shot, "response": "b b"}])
    (sample,) = load_sft_dataset([path], SFTDataConfig(), word_tokenizer)
    assert tokens(word_tokenizer, sample.response_ids) == ["b", "b", "<|im_end|>"]
    assert "there" in tokens(word_tokenizer, sample.prompt_ids)


def test_system_prompt_goes_first(tmp_path, word_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "hi", "response": "fine"}])
    (sample,) = load_sft_dataset([path], SFTDataConfig(system_prompt="you are fine"), word_tokenizer)
    assert tokens(word_tokenizer, sample.prompt_ids)[:6] == ["<|im_start|>", "system", "you", "are", "fine",
                                                             "<|im_end|>"]


def test_raw_format_appends_eos_to_the_response(tmp_path, word_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "repeat the letter a", "response": "a a"}])
    (sample,) = load_sft_dataset([path], SFTDataConfig(prompt_format="raw"), word_tokenizer)
    assert tokens(word_tokenizer, sample.prompt_ids) == ["repeat", "the", "letter", "a"]
    assert sample.response_ids == [A, A, IM_END] and sample.response_mask == [1, 1, 1]


def test_raw_format_cannot_render_a_conversation(tmp_path, word_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                            {"role": "assistant", "content": "hi"}]}])
    with pytest.raises(ConfigError, match="conversations need a chat template"):
        load_sft_dataset([path], SFTDataConfig(prompt_format="raw"), word_tokenizer)


def test_verl_gsm8k_parquet_with_a_dotted_response_key(tmp_path, word_tokenizer):
    (tmp_path / "gsm8k").mkdir()
    write_jsonl(tmp_path / "gsm8k" / "train.jsonl", [{"question": "how are you", "answer": "fine thanks\n#### 2"}])
    convert_gsm8k(tmp_path / "gsm8k", tmp_path / "out")
    path = str(tmp_path / "out" / "train.parquet")
    (sample,) = load_sft_dataset([path], SFTDataConfig(response_key="extra_info.answer"), word_tokenizer)
    assert sample.prompt_ids == load_prompt_dataset([path], DataConfig(), word_tokenizer)[0].prompt_ids
    expected = word_tokenizer("fine thanks\n#### 2<|im_end|>", add_special_tokens=False)["input_ids"]
    assert sample.response_ids == expected and sample.response_mask == [1] * len(expected)


def test_builtin_letters_demonstrations(word_tokenizer):
    dataset = load_sft_dataset(["builtin:letters"], SFTDataConfig(), word_tokenizer)
    assert len(dataset) == 200
    letter = tokens(word_tokenizer, dataset[0].prompt_ids)[5]
    assert tokens(word_tokenizer, dataset[0].response_ids) == [letter] * 8 + ["<|im_end|>"]


@pytest.mark.parametrize(
    "record, message",
    [
        ({"prompt": "hi"}, "{path} line 2 has no key 'response' (it has: prompt); "
                           "set data.response_key to the key that holds the response"),
        ({"prompt": "hi", "response": None}, "{path} line 2: 'response' is null; every row needs the response"),
        ({"prompt": [{"role": "user"}], "response": "hi"}, "{path} line 2: 'prompt' message 0 is not a {{role, "
                                                           "content}} mapping with text content"),
        ({"prompt": 3, "response": "hi"}, "{path} line 2: 'prompt' must be text or a non-empty list"),
    ],
)
def test_bad_rows_name_file_row_and_key(tmp_path, word_tokenizer, record, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "hi", "response": "hi"}, record])
    with pytest.raises(DataError) as error:
        load_sft_dataset([path], SFTDataConfig(), word_tokenizer)
    assert str(error.value).startswith(message.format(path=path))


def test_missing_dotted_key_lists_the_keys_of_its_parent(tmp_path, word_tokenizer):
    path = str(write_parquet([{"prompt": "hi", "extra_info": {"split": "train", "index": 0}}], tmp_path / "d.parquet"))
    with pytest.raises(DataError) as error:
        load_sft_dataset([path], SFTDataConfig(response_key="extra_info.answer"), word_tokenizer)
    assert str(error.value) == (f"{path} row 0 has no key 'extra_info.answer' ('extra_info' has: index, split); "
                                "set data.response_key to the key that holds the response")


def test_conversation_without_assistant_turn_is_an_error(tmp_path, word_tokenizer):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match=r"line 1: the conversation in 'messages' has no assistant turn"):
        load_sft_dataset([path], SFTDataConfig(), word_tokenizer)


def test_template_that_rewrites_earlier_turns_is_reported(tmp_path, make_word_tokenizer):
    # marks the last message only: once a turn follows, the earlier rendering no longer holds
    rewriting = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}"
                 "{% if loop.last %} q{% endif %}<|im_end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant{% endif %}")
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "hi", "response": "fine"}])
    message = "line 1: the chat template changes the text of earlier messages when message 1 is added"
    with pytest.raises(DataError, match=message):
        load_sft_dataset([path], SFTDataConfig(), make_word_tokenizer(rewriting))


class TestTruncation:
    """The sample "repeat the letter a" -> "a a a": 9 prompt + 4 response tokens = 13."""

    @pytest.fixture
    def path(self, tmp_path):
        return write_jsonl(tmp_path / "d.jsonl", [{"prompt": "repeat the letter a", "response": "a a a"}])

    def test_error_names_the_row_and_the_lengths(self, path, word_tokenizer):
        with pytest.raises(DataError) as error:
            load_sft_dataset([path], SFTDataConfig(max_length=10), word_tokenizer)
        assert str(error.value).startswith(f"{path} line 1: the sample has 13 tokens (4 from the first trained token "
                                           "on), more than data.max_length=10")

    def test_left_drops_the_start_of_the_prompt(self, path, word_tokenizer):
        dataset = load_sft_dataset([path], SFTDataConfig(max_length=10, truncation="left"), word_tokenizer)
        (sample,) = dataset
        assert len(sample.prompt_ids) == 6 and sample.response_ids == [A, A, A, IM_END]
        assert dataset.num_truncated == 1

    def test_left_into_the_response_keeps_one_prompt_token(self, path, word_tokenizer):
        (sample,) = load_sft_dataset([path], SFTDataConfig(max_length=4, truncation="left"), word_tokenizer)
        # the last 4 tokens are all trained; the first becomes the prompt that predicts the others
        assert sample.prompt_ids == [A] and sample.response_ids == [A, A, IM_END]

    def test_right_drops_the_end_of_the_response(self, path, word_tokenizer):
        (sample,) = load_sft_dataset([path], SFTDataConfig(max_length=10, truncation="right"), word_tokenizer)
        assert len(sample.prompt_ids) == 9 and sample.response_ids == [A] and sample.response_mask == [1]

    def test_samples_without_response_tokens_are_dropped(self, tmp_path, path, word_tokenizer):
        two = write_jsonl(tmp_path / "two.jsonl", [{"prompt": "repeat the letter a", "response": "a a a"},
                                                   {"prompt": "hi", "response": "a"}])
        dataset = load_sft_dataset([two], SFTDataConfig(max_length=9, truncation="right"), word_tokenizer)
        assert len(dataset) == 1 and dataset.num_dropped == 1
        with pytest.raises(DataError, match="none of the 1 samples .* has a response token left"):
            load_sft_dataset([path], SFTDataConfig(max_length=9, truncation="right"), word_tokenizer)


def test_collate_builds_the_rl_layout():
    samples = [SFTSample([5, 6], [7, 8, 9], [1, 0, 1], "x"), SFTSample([5], [7], [1], "y")]
    batch = collate_sft(samples, pad_token_id=0)
    # P = 2 (left-padded), T = 3 (right-padded)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [0, 5, 7, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 0, 1, 1, 1]]
    assert batch["response_mask"].tolist() == [[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    assert batch["response_mask"].dtype == torch.float32
    assert batch.prompt_width == 2 and batch.response_width == 3
    assert collate_sft([without_loss(samples[0])], 0)["response_mask"].sum() == 0
