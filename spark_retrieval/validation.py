"""Value checks shared by every layer: the models' Params, the command lines and the job configs.

A *converter* (``integer(at_least=1)``, ``number(above=0)``, ``one_of("bce", "ccl")``, …) is what a
``pyspark.ml`` Param takes as its ``typeConverter``: it returns the value in its canonical type or raises
``InvalidParameterError`` saying what was expected (``must be an integer >= 1, got 0``). ``None`` never
reaches a converter (pyspark passes it through), so optional parameters only need their docs to say so.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

from .errors import InvalidParameterError

Converter = Callable[[Any], Any]


def is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidParameterError(message)


def _bounds(at_least=None, at_most=None, above=None, below=None) -> tuple[Callable[[Any], bool], str]:
    parts, tests = [], []
    for symbol, bound, test in (
        (">=", at_least, lambda v, b: v >= b),
        (">", above, lambda v, b: v > b),
        ("<=", at_most, lambda v, b: v <= b),
        ("<", below, lambda v, b: v < b),
    ):
        if bound is not None:
            parts.append(f"{symbol} {bound:g}" if isinstance(bound, float) else f"{symbol} {bound}")
            tests.append(lambda v, b=bound, t=test: t(v, b))
    return (lambda value: all(t(value) for t in tests)), " and ".join(parts)


def integer(at_least: int | None = None, at_most: int | None = None) -> Converter:
    """An integer (bools refused; a float holding a whole number is accepted, as YAML and JSON give it)."""
    within, bounds = _bounds(at_least, at_most)
    expected = f"an integer {bounds}".strip()

    def convert(value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        check(is_integer(value) and within(value), f"must be {expected}, got {value!r}")
        return int(value)

    return convert


def number(at_least=None, at_most=None, above=None, below=None) -> Converter:
    """A finite real number, returned as ``float``."""
    within, bounds = _bounds(at_least, at_most, above, below)
    expected = f"a number {bounds}".strip()

    def convert(value: Any) -> float:
        check(is_real(value) and within(value), f"must be {expected}, got {value!r}")
        return float(value)

    return convert


def boolean(value: Any) -> bool:
    check(isinstance(value, bool), f"must be true or false, got {value!r}")
    return value


def text(value: Any) -> str:
    check(isinstance(value, str) and value != "", f"must be a non-empty string, got {value!r}")
    return value


def one_of(*choices: str) -> Converter:
    def convert(value: Any) -> str:
        check(value in choices, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    return convert


def distinct_integers(value: Any, what: str, at_least: int | None = None) -> list[int]:
    """An integer, a list of them, or a comma list (``"20,100,200"``) → distinct integers (``>= at_least``), in
    the order given; anything else is one ``InvalidParameterError`` naming ``what``."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, str):
        try:
            values = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise InvalidParameterError(f"{what} must be a comma list of integers, got {value!r}") from None
    bound = "" if at_least is None else f" >= {at_least}"
    check(
        bool(values)
        and all(is_integer(v) and (at_least is None or v >= at_least) for v in values)
        and len(set(values)) == len(values),
        f"{what} must be one or more distinct integers{bound}, got {value!r}",
    )
    return [int(v) for v in values]


def list_of(element: Converter, what: str) -> Converter:
    """A non-empty list (tuples become lists: what a saved model's JSON gives back) of ``element`` values."""

    def convert(value: Any) -> list:
        check(isinstance(value, (list, tuple)) and len(value) > 0, f"must be a non-empty list of {what}, got {value!r}")
        return [element(v) for v in value]

    return convert


def integer_list(at_least: int | None = None) -> Converter:
    return list_of(integer(at_least), "integers")


def number_list(at_least: float | None = None) -> Converter:
    """Finite numbers, returned as floats."""
    return list_of(number(at_least), "numbers")


def mapping(value: Any) -> dict[str, Any]:
    """A mapping with string keys (a YAML or JSON object), returned as a plain dict."""
    check(isinstance(value, dict) and all(isinstance(key, str) for key in value), f"must be a mapping by name, got {value!r}")
    return dict(value)


def text_list(value: Any) -> list[str]:
    check(
        isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) and v for v in value),
        f"must be a non-empty list of strings, got {value!r}",
    )
    return list(value)
