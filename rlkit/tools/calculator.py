"""The calculator tool: arithmetic on numbers, evaluated by walking Python's syntax tree (no `eval`).

Allowed: int and float literals, + - * / // % and ** (`^` also means power, as on a calculator), unary + and -,
parentheses, the constants pi and e, and the functions abs, round, min, max, sqrt, floor, ceil. Anything else
(names, attributes, strings, comprehensions, ...) is refused. Sizes are bounded so that no expression can take
long: the text is at most 500 characters, an exponent at most 1000 in size, and no integer, intermediate
results included, longer than 4096 bits (about 1233 digits). Thousands separators ("1,250") are read as numbers.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from typing import Callable

MAX_CHARS = 500
MAX_EXPONENT = 1000
MAX_INT_BITS = 4096

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.BitXor: operator.pow,  # "2 ^ 10" means a power on a calculator
}
_UNARY: dict[type, Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt, "floor": math.floor, "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return its value.

    Args:
        expression: The arithmetic to compute, such as "(48 + 24) * 3 / 4". It may use + - * / // % and ** (or ^),
            parentheses, pi, e and the functions abs, round, min, max, sqrt, floor, ceil.
    """
    return format_number(evaluate(expression))


def evaluate(expression: str) -> float:
    """The value of `expression`; ValueError saying what is not allowed or too large."""
    if len(expression) > MAX_CHARS:
        raise ValueError(f"the expression has {len(expression)} characters; the calculator takes at most {MAX_CHARS}")
    text = _THOUSANDS.sub("", expression.strip())
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError(f"'{expression}' is not an arithmetic expression") from None
    try:
        return _value(tree.body)
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    except OverflowError:
        raise ValueError("the result is too large") from None


def format_number(value: float) -> str:
    """Whole numbers without a decimal point (12.0 -> "12"); others to 12 significant digits."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return format(value, ".12g")
    return str(value)


def _value(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _bounded(node.value)
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if type(node.op) in (ast.Pow, ast.BitXor):
            _check_power(left, right)
        return _bounded(_BINARY[type(node.op)](left, right))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and not node.keywords and node.args):
        return _bounded(_FUNCTIONS[node.func.id](*(_value(arg) for arg in node.args)))
    raise ValueError(f"'{ast.unparse(node)}' is not allowed; use numbers, + - * / // % ** and "
                     f"{', '.join(_FUNCTIONS)}")


def _check_power(base: float, exponent: float) -> None:
    if isinstance(exponent, complex) or abs(exponent) > MAX_EXPONENT:
        raise ValueError(f"exponents are limited to {MAX_EXPONENT} in size")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if math.log2(abs(base)) * exponent > MAX_INT_BITS:  # checked before the power is computed
            raise ValueError("the result is too large")


def _bounded(value: float) -> float:
    if isinstance(value, complex):
        raise ValueError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ValueError("the result is too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("the result is too large" if math.isinf(value) else "the result is not a number")
    return value
