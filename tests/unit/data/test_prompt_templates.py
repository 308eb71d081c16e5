import pytest

from rlkit.data.templates import (
    encode_prompts,
    render_prompt,
    resolve_prompt_format,
    truncate_prompt,
)
from rlkit.errors import ConfigError, DataError


def test_auto_format_follows_the_tokenizer(tokenizer, plain_tokenizer):
    assert resolve_prompt_format("auto", tokenizer) == "chat"
    assert resolve_prompt_format("auto", plain_tokenizer) == "raw"
    assert resolve_prompt_format("raw", tokenizer) == "raw"
    with pytest.raises(ConfigError, match="set data.prompt_format=raw"):
        resolve_prompt_format("chat", plain_tokenizer)


def test_chat_rendering_adds_the_generation_prompt(tokenizer):
    text = render_prompt("repeat the letter a", tokenizer, "chat")
    assert text == "<|im_start|>user\nrepeat the letter a<|im_end|>\n<|im_start|>assistant\n"


def test_system_prompt_goes_first_unless_the_prompt_has_one(tokenizer):
    text = render_prompt("hi", tokenizer, "chat", system_prompt="you are helpful")
    assert text.startswith("<|im_start|>system\nyou are helpful<|im_end|>\n<|im_start|>user\nhi")
    own = [{"role": "system", "content": "mine"}, {"role": "user", "content": "hi"}]
    text = render_prompt(own, tokenizer, "chat", system_prompt="you are helpful")
    assert "you are helpful" not in text and text.startswith("<|im_start|>system\nmine")


def test_raw_rendering_joins_message_contents(tokenizer):
    assert render_prompt("hi", tokenizer, "raw") == "hi"
    messages = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}]
    assert render_prompt(messages, tokenizer, "raw", system_prompt="sys") == "sys\none\ntwo"


def test_encode_counts_one_token_per_word(tokenizer):
    chat = render_prompt("repeat the letter a", tokenizer, "chat")
    # <|im_start|> user repeat the letter a <|im_end|> <|im_start|> assistant
    ids_chat, ids_raw = encode_prompts([chat, "repeat the letter a"], tokenizer, "chat")
    assert len(ids_chat) == 9 and len(ids_raw) == 4
    assert tokenizer.convert_ids_to_tokens(ids_chat)[-2:] == ["<|im_start|>", "assistant"]
    assert encode_prompts([], tokenizer, "raw") == []


def test_truncation_sides_and_error():
    ids = [1, 2, 3, 4, 5]
    assert truncate_prompt(ids, 5, "error", "f row 0") == ids
    assert truncate_prompt(ids, 3, "left", "f row 0") == [3, 4, 5]
    assert truncate_prompt(ids, 3, "right", "f row 0") == [1, 2, 3]
    with pytest.raises(DataError) as error:
        truncate_prompt(ids, 3, "error", "f row 0")
    message = str(error.value)
    assert message.startswith("f row 0: the prompt has 5 tokens, more than data.max_prompt_length=3")
    assert "data.filter_overlong_prompts=true" in message and "data.truncation=left" in message
