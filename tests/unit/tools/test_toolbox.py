"""Tools as typed functions: their JSON schema (options hidden), loading by name or file, and a ToolBox that
answers every failure (unknown tool, wrong arguments, an exception, a hang, megabytes) with an error message."""

from __future__ import annotations

import time

import pytest

from rlkit.errors import PluginError
from rlkit.tools import Tool, ToolBox, load_toolbox


def unit_price(total: float, count: int, *, currency: str = "$") -> str:
    """The price of one item.

    Args:
        total: What all the items cost together.
        count: How many items there are.
    """
    return f"{currency}{total / count:.2f}"


def slow(seconds: float) -> str:
    """Wait.

    Args:
        seconds: How long.
    """
    time.sleep(seconds)
    return "done"


def chatty(size: int) -> str:
    """Say a lot.

    Args:
        size: How many characters.
    """
    return "x" * size


def structured() -> dict:
    """A result that is not text."""
    return {"a": [1, 2]}


def broken() -> str:
    """Fail."""
    raise RuntimeError("the backend is down")


def test_the_schema_comes_from_type_hints_and_docstring_without_the_options():
    tool = Tool.of(unit_price, {"currency": "EUR "})
    function = tool.schema["function"]
    assert tool.schema["type"] == "function" and function["name"] == "unit_price"
    assert function["description"] == "The price of one item."
    assert function["parameters"]["properties"] == {
        "total": {"type": "number", "description": "What all the items cost together."},
        "count": {"type": "integer", "description": "How many items there are."},
    }
    assert function["parameters"]["required"] == ["total", "count"]  # `currency` is an option, not shown
    assert ToolBox([tool]).call("unit_price", {"total": 10, "count": 4}).result == "EUR 2.50"


def test_a_toolbox_answers_failures_with_messages():
    box = ToolBox([Tool.of(fn) for fn in (unit_price, slow, chatty, structured, broken)], timeout_s=0.5,
                  max_output_chars=100)
    good = box.call("unit_price", {"total": 9, "count": 3})
    assert (good.result, good.error) == ("$3.00", False)
    failures = {
        "unknown": box.call("nope", {}),
        "not an object": box.call("unit_price", [1, 2]),
        "missing argument": box.call("unit_price", {"total": 1}),
        "extra argument": box.call("unit_price", {"total": 1, "count": 1, "tax": 2}),
        "option from the model": box.call("unit_price", {"total": 1, "count": 1, "currency": "x"}),
        "raises": box.call("broken", {}),
        "hangs": box.call("slow", {"seconds": 5}),
    }
    assert all(call.error and call.result.startswith("Error: ") for call in failures.values())
    assert ("unknown tool 'nope'; the tools are: unit_price, slow, chatty, structured, broken"
            in failures["unknown"].result)
    assert "RuntimeError: the backend is down" in failures["raises"].result
    assert "did not finish within 0.5 s" in failures["hangs"].result
    assert "wrong arguments for unit_price" in failures["missing argument"].result
    huge = box.call("chatty", {"size": 5_000_000})  # megabytes: cut, and still a result
    assert not huge.error and huge.result.startswith("x" * 100)
    assert "[truncated: 4999900 more characters]" in huge.result
    assert box.call("structured", {}).result == '{"a": [1, 2]}'


def test_tools_load_by_name_and_by_file(tmp_path):
    plugin = tmp_path / "my_tools.py"
    plugin.write_text('def shout(text: str) -> str:\n    """Shout.\n\n'
                      '    Args:\n        text: What to shout.\n    """\n'
                      "    return text.upper()\n")
    box = load_toolbox(["calculator", f"{plugin}:shout"])
    assert [schema["function"]["name"] for schema in box.schemas] == ["calculator", "shout"]
    assert box.call("shout", {"text": "hi"}).result == "HI"
    assert box.call("calculator", {"expression": "6 * 7"}).result == "42"
    python = load_toolbox(["python"], {"python": {"timeout_s": 3, "memory_mb": 256}})
    assert python.tools["python"].options == {"timeout_s": 3, "memory_mb": 256}


def test_bad_tools_are_refused_before_training(tmp_path):
    plugin = tmp_path / "bad_tools.py"
    plugin.write_text("def undocumented(x: int) -> int:\n    return x\n\n"
                      'def untyped(x):\n    """Doc.\n\n    Args:\n        x: X.\n    """\n    return x\n')
    with pytest.raises(PluginError, match="cannot be described to the model: .*no docstring"):
        load_toolbox([f"{plugin}:undocumented"])
    with pytest.raises(PluginError, match="missing a type hint"):
        load_toolbox([f"{plugin}:untyped"])
    with pytest.raises(PluginError,
                       match=r"tool 'python' has no option memory \(its options are timeout_s, memory_mb\)"):
        load_toolbox(["python"], {"python": {"memory": 1}})
    with pytest.raises(PluginError, match="tool_options has calculator, which environment.tools does not list"):
        load_toolbox(["python"], {"calculator": {}})
    with pytest.raises(PluginError, match="unknown tool 'calculater'. Did you mean 'calculator'"):
        load_toolbox(["calculater"])
