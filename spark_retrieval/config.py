"""Job configuration: a YAML file plus ``--set key=value`` overrides, ``${VAR}`` substitution, validation.

Everything here is pure Python and runs before Spark starts, so a bad config costs no JVM start:
an unknown key, a value of the wrong type or an unset ``${VAR}`` is one ``ConfigError`` naming the
file and the dotted key.

    data:   {dataset: ml-1m, path: "${DATA_DIR}", holdout: 3, positive_threshold: 2.0}
    # or a user's own event log (no rating column: every event is a positive, no positive_threshold):
    # data: {interactions: s3://bucket/events/, format: parquet, columns: {user_id: uid, item_id: sku, timestamp: ts},
    #        items: s3://bucket/items/, users: null, schema: null, holdout: 3}
    model:  {name: item_cf, params: {k_neighbours: 100}}   # params go to the estimator as is
    models: all                                            # the benchmark and tune jobs' rows
    params: null                                           # the benchmark job: a tuned.json (tune job's output)
    bootstrap: 1000                                        # the benchmark job: resamples of the 95 % intervals (0: none)
    seeds: null                                            # the benchmark job: "0,1,2" fits stochastic rows once per seed
    trials: 20                                             # the tune job: trials per model
    metric: ndcg                                           # the tune job: ndcg or recall @k on validation
    max_epochs: 12                                         # the tune job: a two-tower trial's epoch limit
    patience: 3                                            # ... and its epochs without a better validation score
    k: 20
    seed: 0
    output: "${OUTPUT:-results/ml-1m}"
    master: null                                           # only when not under spark-submit
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import yaml

from .errors import UserError

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used (names the file and the key)."""


@dataclass(frozen=True)
class DataConfig:
    """A MovieLens ``dataset`` (with ``path``), or a user's event log: ``interactions`` and how to read it."""

    dataset: typing.Optional[str] = None
    path: typing.Optional[str] = None
    interactions: typing.Optional[str] = None
    format: typing.Optional[str] = None
    columns: dict = field(default_factory=dict, hash=False)  # a dict: compared, not hashed
    items: typing.Optional[str] = None
    users: typing.Optional[str] = None
    schema: typing.Optional[str] = None
    holdout: int = 3
    positive_threshold: typing.Optional[float] = None

    @property
    def name(self) -> str:
        return self.interactions or self.dataset or "ml-latest-small"


@dataclass(frozen=True)
class ModelConfig:
    name: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class JobConfig:
    data: DataConfig
    output: str
    model: typing.Optional[ModelConfig] = None
    models: str = "all"
    params: typing.Optional[str] = None
    bootstrap: int = 1000
    seeds: typing.Optional[str] = None
    trials: int = 20
    metric: str = "ndcg"
    max_epochs: int = 12
    patience: int = 3
    k: int = 20
    seed: int = 0
    master: typing.Optional[str] = None
    source: str = field(default="<config>", compare=False)

    def path(self, *parts: str) -> str:
        """``output/part/…`` — where every job reads and writes (any local path or URI)."""
        return "/".join([self.output.rstrip("/"), *parts])


# -- substitution ----------------------------------------------------------------------------------


def substitute(value: Any, environ: Mapping[str, str], source: str, key: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed YAML tree."""
    if isinstance(value, dict):
        return {name: substitute(item, environ, source, _join(key, name)) for name, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, environ, source, f"{key}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{source}: {key}: environment variable {name} is not set (use ${{{name}:-default}})")

    return _VARIABLE.sub(replace, value)


# -- overrides -------------------------------------------------------------------------------------


def apply_overrides(document: dict, overrides: Sequence[str], source: str) -> dict:
    """``["model.params.k_neighbours=50", …]`` → a new tree; values are parsed as YAML scalars."""
    result = _deep_copy(document)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {override!r}: expected key=value (dotted key, e.g. model.params.k_neighbours=50)")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        node = result
        *parents, leaf = key.strip().split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: --set {key}: {part} is not a mapping")
            node = child
        node[leaf] = value
    return result


# -- validation ------------------------------------------------------------------------------------


def build(cls: type, document: Any, source: str, key: str = "") -> Any:
    """Check ``document`` against dataclass ``cls`` (unknown keys, missing keys, types) and build it."""
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: {key or '(top level)'}: expected a mapping, got {_kind(document)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(document) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {_join(key, unknown[0])!r}; allowed here: {', '.join(sorted(fields))}"
        )
    values = {}
    for name, spec in fields.items():
        dotted = _join(key, name)
        if name not in document:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: missing required key {dotted!r}")
            continue
        values[name] = _convert(hints[name], document[name], source, dotted)
    return cls(**values)


def _convert(hint: Any, value: Any, source: str, key: str) -> Any:
    optional = typing.get_origin(hint) is typing.Union
    if optional:
        if value is None:
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if dataclasses.is_dataclass(hint):
        return build(hint, value, source, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    accepted = {int: int, float: float, str: str, dict: dict, bool: bool}[hint]
    if isinstance(value, accepted) and not (hint is int and isinstance(value, bool)):
        if hint is dict:
            return _string_keyed(value, source, key)
        return value
    raise ConfigError(f"{source}: {key}: expected {_type_name(hint)}, got {_kind(value)} {value!r}")


def _string_keyed(value: dict, source: str, key: str) -> dict:
    bad = [name for name in value if not isinstance(name, str)]
    if bad:
        raise ConfigError(f"{source}: {key}: keys must be strings, got {bad[0]!r}")
    return dict(value)


# -- entry point -----------------------------------------------------------------------------------


def parse_config(
    text: str, source: str, overrides: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> JobConfig:
    """YAML text → validated ``JobConfig`` (overrides first, then ``${VAR}`` substitution, then types)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    document = {} if document is None else document
    if isinstance(document, dict):
        document = apply_overrides(document, overrides, source)
    document = substitute(document, os.environ if environ is None else environ, source)
    config = build(JobConfig, document, source)
    return dataclasses.replace(config, source=source)


def load_config(uri: str, overrides: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> JobConfig:
    """Read a config from a local path or an ``s3://`` URI and validate it."""
    from .storage import read_small_text

    return parse_config(read_small_text(uri), uri, overrides, environ)


def _join(key: str, name: Any) -> str:
    return f"{key}.{name}" if key else str(name)


def _kind(value: Any) -> str:
    return "null" if value is None else {dict: "a mapping", list: "a list"}.get(type(value), type(value).__name__)


def _type_name(hint: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", dict: "a mapping", bool: "true/false"}[hint]


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy(item) for item in value]
    return value
