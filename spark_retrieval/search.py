"""Search spaces: what a model's parameters may be tuned over, declared next to its Params.

Each model's Params mixin carries ``SEARCH_SPACE: dict[str, Domain]``, one domain per tunable Param::

    SEARCH_SPACE = {"alpha": FloatRange(0.0, 5.0), "rank": IntRange(16, 256, log=True), "hidden_dims": Choice(...)}

A domain knows how to ask an Optuna trial for a value (``suggest(trial, name)``, through
``trial.suggest_int`` / ``suggest_float`` / ``suggest_categorical``), whether a value lies inside it
(``contains``: every model's defaults do) and, with ``when``, the settings of the other Params under which
it means anything (``FloatRange(..., when={"loss": "bce"})``: searched only for rows whose loss is bce).
This module imports nothing from Optuna: a trial is whatever object has those three methods.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import InvalidParameterError
from .validation import is_integer, is_real


def _applies(when: Mapping[str, Any] | None, params: Mapping[str, Any]) -> bool:
    if not when:
        return True
    for name, allowed in when.items():
        allowed = tuple(allowed) if isinstance(allowed, (list, tuple, set, frozenset)) else (allowed,)
        if params.get(name) not in allowed:
            return False
    return True


def _check_bounds(kind: str, low: Any, high: Any, log: bool) -> None:
    if not (low <= high):
        raise InvalidParameterError(f"{kind}: low must be <= high, got {low!r} > {high!r}")
    if log and low <= 0:
        raise InvalidParameterError(f"{kind}: a log range needs low > 0, got {low!r}")


@dataclass(frozen=True)
class Domain:
    """Base of the domains; ``when``: ``{param: value or values}`` that must hold for the domain to apply."""

    def suggest(self, trial: Any, name: str) -> Any:
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        raise NotImplementedError

    def decode(self, raw: Any) -> Any:
        """The parameter value of what a trial stored (``trial.params[name]``)."""
        return raw

    def encode(self, value: Any, name: str) -> dict[str, Any]:
        """What a trial stores for ``value`` (``{optuna name: raw}``), for ``study.enqueue_trial``; ``{}`` when the
        value lies outside the domain."""
        return {name: value} if self.contains(value) else {}

    def applies(self, params: Mapping[str, Any]) -> bool:
        return _applies(getattr(self, "when", None), params)

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class IntRange(Domain):
    """Integers ``low..high`` (both included), log-uniform with ``log=True``."""

    low: int
    high: int
    log: bool = False
    when: Mapping[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not (is_integer(self.low) and is_integer(self.high)):
            raise InvalidParameterError(f"IntRange: bounds must be integers, got {self.low!r}, {self.high!r}")
        _check_bounds("IntRange", self.low, self.high, self.log)

    def suggest(self, trial: Any, name: str) -> int:
        return int(trial.suggest_int(name, self.low, self.high, log=self.log))

    def contains(self, value: Any) -> bool:
        return is_integer(value) and self.low <= value <= self.high

    def decode(self, raw: Any) -> int:
        return int(raw)

    def describe(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class FloatRange(Domain):
    """Reals ``low..high``, log-uniform with ``log=True`` (then ``low > 0``)."""

    low: float
    high: float
    log: bool = False
    when: Mapping[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not (is_real(self.low) and is_real(self.high)):
            raise InvalidParameterError(f"FloatRange: bounds must be finite numbers, got {self.low!r}, {self.high!r}")
        _check_bounds("FloatRange", self.low, self.high, self.log)

    def suggest(self, trial: Any, name: str) -> float:
        return float(trial.suggest_float(name, float(self.low), float(self.high), log=self.log))

    def contains(self, value: Any) -> bool:
        return is_real(value) and self.low <= value <= self.high

    def decode(self, raw: Any) -> float:
        return float(raw)

    def describe(self) -> dict[str, Any]:
        return {"type": "float", "low": float(self.low), "high": float(self.high), "log": self.log}


def _label(value: Any) -> Any:
    """What Optuna stores for a choice: the value itself when it is a scalar, else its JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(list(value) if isinstance(value, tuple) else value, sort_keys=True)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is bool or type(b) is bool:
        return a is b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@dataclass(frozen=True)
class Choice(Domain):
    """One of ``values``; a list or tuple value (layer sizes) is offered to Optuna as its JSON text and given
    back as a list."""

    values: tuple
    when: Mapping[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        values = tuple(self.values)
        if not values:
            raise InvalidParameterError("Choice: needs at least one value")
        labels = [_label(v) for v in values]
        if len(set(map(repr, labels))) != len(labels):
            raise InvalidParameterError(f"Choice: values must be distinct, got {values!r}")
        object.__setattr__(self, "values", values)

    def suggest(self, trial: Any, name: str) -> Any:
        return self.decode(trial.suggest_categorical(name, [_label(v) for v in self.values]))

    def contains(self, value: Any) -> bool:
        return any(_same(value, v) for v in self.values)

    def encode(self, value: Any, name: str) -> dict[str, Any]:
        return next(({name: _label(v)} for v in self.values if _same(value, v)), {})

    def decode(self, raw: Any) -> Any:
        for value in self.values:
            if _label(value) == raw and type(_label(value)) is type(raw):
                return list(value) if isinstance(value, (list, tuple)) else value
        raise InvalidParameterError(f"Choice: {raw!r} is none of {self.values!r}")

    def describe(self) -> dict[str, Any]:
        return {"type": "choice", "values": [list(v) if isinstance(v, tuple) else v for v in self.values]}


@dataclass(frozen=True)
class Each(Domain):
    """One value of ``element`` per entry of the list parameter ``of`` (a weight per merged channel).

    Declared without a length; ``resolved(params)`` fixes it from the row's ``of`` list. Optuna sees one
    parameter per entry, ``name[0]``, ``name[1]``, …. ``None`` (the parameter left unset) lies inside: it means
    every entry alike, and ``unset`` says which entry that is (it is what ``encode(None)`` enqueues; without it,
    ``None`` cannot be enqueued).
    """

    element: Domain
    of: str
    length: int | None = None
    when: Mapping[str, Any] | None = field(default=None, compare=False)
    unset: Any = None

    def resolved(self, params: Mapping[str, Any]) -> "Each":
        entries = params.get(self.of)
        if not isinstance(entries, (list, tuple)) or not entries:
            raise InvalidParameterError(f"Each: {self.of} must be a non-empty list to size this domain, got {entries!r}")
        return Each(self.element, self.of, len(entries), self.when, self.unset)

    def suggest(self, trial: Any, name: str) -> list:
        if self.length is None:
            raise InvalidParameterError(f"Each({self.of}): resolve the length before suggesting {name}")
        return [self.element.suggest(trial, f"{name}[{index}]") for index in range(self.length)]

    def contains(self, value: Any) -> bool:
        if value is None:
            return True
        return (
            isinstance(value, (list, tuple))
            and (self.length is None or len(value) == self.length)
            and all(self.element.contains(v) for v in value)
        )

    def decode(self, raw: Any) -> list:
        return list(raw)

    def encode(self, value: Any, name: str) -> dict[str, Any]:
        if value is None and self.unset is not None and self.length is not None:
            value = [self.unset] * self.length
        if value is None or not self.contains(value):
            return {}
        encoded = {}
        for index, entry in enumerate(value):
            encoded.update(self.element.encode(entry, f"{name}[{index}]"))
        return encoded

    def describe(self) -> dict[str, Any]:
        return {"type": "each", "of": self.of, "length": self.length, "element": self.element.describe()}


def describe_space(space: Mapping[str, Domain]) -> dict[str, dict[str, Any]]:
    """A JSON-ready description of a search space (name → its domain)."""
    return {name: domain.describe() for name, domain in space.items()}
