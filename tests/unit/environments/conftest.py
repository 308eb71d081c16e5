"""The tiny tokenizer, as is (ChatML without tool support) and with a template that renders tools."""

import copy

import pytest

# A ChatML template that describes tools in a system message and wraps tool results in a user turn, the way
# tool-calling templates do (written for these tests).
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools:{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}"
    "<|im_end|>\n{% endif %}"
    "{% for m in messages %}{% if m.role == 'tool' %}<|im_start|>user\n<tool_response>{{ m.content }}"
    "</tool_response><|im_end|>\n{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def tool_tokenizer(tokenizer):
    with_tools = copy.deepcopy(tokenizer)
    with_tools.chat_template = TOOL_TEMPLATE
    return with_tools
