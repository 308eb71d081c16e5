"""The tokens between two model turns: the rest of the assistant message's end, the environment's messages and
the next assistant header, as the chat template writes them."""

from __future__ import annotations

import copy

import pytest

from rlkit.environments import ChatRenderer
from rlkit.errors import ConfigError

TOOL = [{"role": "tool", "content": "42"}]


def text(tokenizer, ids) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_chatml_after_a_turn_that_ended_with_its_end_token(tokenizer):
    renderer = ChatRenderer(tokenizer)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    # the model sampled <|im_end|> itself: only the newline of the assistant message's end is left
    assert (text(tokenizer, renderer.after_turn_ids(TOOL, end))
            == "\n<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\n")
    # a turn cut short: the template closes the assistant message
    other = tokenizer("a", add_special_tokens=False)["input_ids"][-1]
    assert text(tokenizer, renderer.after_turn_ids(TOOL, other)).startswith("<|im_end|>\n<|im_start|>tool\n42")
    # no messages: straight to the next assistant turn
    assert text(tokenizer, renderer.after_turn_ids([], end)) == "\n<|im_start|>assistant\n"


def test_a_tool_template_wraps_tool_results_its_own_way(tool_tokenizer):
    renderer = ChatRenderer(tool_tokenizer)
    end = tool_tokenizer.convert_tokens_to_ids("<|im_end|>")
    two = [{"role": "tool", "content": "42"}, {"role": "tool", "content": "7"}]
    assert text(tool_tokenizer, renderer.after_turn_ids(two, end)) == (
        "\n<|im_start|>user\n<tool_response>42</tool_response><|im_end|>\n"
        "<|im_start|>user\n<tool_response>7</tool_response><|im_end|>\n<|im_start|>assistant\n")
    prompt_text, ids = renderer.prompt([{"role": "user", "content": "hi"}],
                                       [{"type": "function", "function": {"name": "f"}}])
    assert prompt_text.startswith("<|im_start|>system\nTools:{") and text(tool_tokenizer, ids) == prompt_text


def test_templates_it_cannot_use_are_refused(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    with pytest.raises(ConfigError, match="needs a tokenizer with a chat template"):
        ChatRenderer(plain)
    strict = copy.deepcopy(tokenizer)
    strict.chat_template = ("{%- for m in messages %}{%- if m.role not in ['user', 'assistant'] %}"
                            "{{ raise_exception('roles must be user or assistant') }}{%- endif %}"
                            "{{ m.role }}: {{ m.content }}\n{%- endfor %}")
    with pytest.raises(ConfigError, match="cannot render the environment's messages .*roles must be user or assistant"):
        ChatRenderer(strict).after_turn_ids(TOOL, 5)
