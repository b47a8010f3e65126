"""Feature schemas of the two-tower models: which features each tower reads, and how they are embedded.

A schema is a YAML file (see ``schemas/dssm_movielens.yaml`` for the documented keys). ``load_schema``
parses and checks it; ``FeatureSchema.resolve`` then fits it to the tables a ``fit`` call was given:
optional features whose table is absent are dropped, and any feature or vocabulary naming a column the
data lacks is rejected with a ``MalformedDataError`` naming that column, before any training starts.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from importlib import resources
from typing import Any, Iterable, Mapping

import yaml

from ...columns import ITEM_ID, LAST_ITEM, RECENT_ITEMS, TIMESTAMP, USER_ID
from ...errors import DataNotFoundError, MalformedDataError

SHIPPED_SCHEMAS = resources.files(__package__).joinpath("schemas")

CATEGORICAL = "categorical"
SEQUENCE = "sequence"
MULTI_CATEGORICAL = "multi_categorical"
KINDS = (CATEGORICAL, SEQUENCE, MULTI_CATEGORICAL)

INTERACTIONS = "interactions"
USER_FEATURES = "user_features"
ITEM_FEATURES = "item_features"
CONTEXT = "context"
TABLES = (INTERACTIONS, USER_FEATURES, ITEM_FEATURES)
SOURCES_BY_TOWER = {"user": (CONTEXT, USER_FEATURES), "item": (INTERACTIONS, ITEM_FEATURES)}
CONTEXT_COLUMNS = (USER_ID, LAST_ITEM, RECENT_ITEMS)
TOWERS = ("user", "item")
POOLINGS = ("mean",)
PARTS = ("user", "history")

FEATURE_KEYS = {"kind", "source", "vocabulary", "embedding_dim", "embedding", "pooling", "max_length", "optional", "part"}


@dataclass(frozen=True)
class Vocabulary:
    """Raw values of ``table.column`` (exploded when it is a list) → indices 1..n; 0 is unknown/padding."""

    name: str
    table: str
    column: str


@dataclass(frozen=True)
class Feature:
    name: str
    tower: str
    kind: str
    source: str
    vocabulary: str
    embedding_dim: int
    embedding: str
    pooling: str | None = None
    max_length: int = 1
    optional: bool = False
    part: str | None = None

    @property
    def is_list(self) -> bool:
        return self.kind != CATEGORICAL


@dataclass(frozen=True)
class FeatureSchema:
    name: str
    model: str
    vocabularies: dict[str, Vocabulary]
    user: tuple[Feature, ...]
    item: tuple[Feature, ...]

    @property
    def features(self) -> tuple[Feature, ...]:
        return self.user + self.item

    def tower(self, tower: str) -> tuple[Feature, ...]:
        return self.user if tower == "user" else self.item

    def feature(self, name: str, tower: str) -> Feature:
        return next(f for f in self.tower(tower) if f.name == name)

    def used_vocabularies(self) -> dict[str, Vocabulary]:
        used = {f.vocabulary for f in self.features}
        return {name: v for name, v in self.vocabularies.items() if name in used}

    def embeddings(self) -> dict[str, tuple[str, int]]:
        """Embedding table name → (vocabulary, size), in first-use order."""
        tables: dict[str, tuple[str, int]] = {}
        for f in self.features:
            tables.setdefault(f.embedding, (f.vocabulary, f.embedding_dim))
        return tables

    def columns_from(self, source: str, tower: str | None = None) -> tuple[str, ...]:
        towers = (tower,) if tower else TOWERS
        return tuple(f.name for t in towers for f in self.tower(t) if f.source == source)

    def with_embedding_dim(self, dim: int) -> "FeatureSchema":
        """The same schema with every embedding of size ``dim`` (a quick way to shrink or grow a model)."""
        resize = lambda features: tuple(replace(f, embedding_dim=dim) for f in features)  # noqa: E731
        return replace(self, user=resize(self.user), item=resize(self.item))

    def resolve(
        self,
        train_columns: Iterable[str],
        user_columns: Iterable[str] | None = None,
        item_columns: Iterable[str] | None = None,
    ) -> "FeatureSchema":
        """Fit the schema to the given tables: drop optional features of absent tables, check every column."""
        columns = {INTERACTIONS: set(train_columns)}
        if user_columns is not None:
            columns[USER_FEATURES] = set(user_columns)
        if item_columns is not None:
            columns[ITEM_FEATURES] = set(item_columns)

        def present(feature: Feature) -> bool:
            table = INTERACTIONS if feature.source == CONTEXT else feature.source
            return table in columns or not feature.optional

        resolved = replace(
            self,
            user=tuple(f for f in self.user if present(f)),
            item=tuple(f for f in self.item if present(f)),
        )
        resolved._check_columns(columns)
        return resolved

    def _check_columns(self, columns: Mapping[str, set]) -> None:
        for feature in self.features:
            if feature.source == CONTEXT:
                _require(columns, INTERACTIONS, (USER_ID, ITEM_ID, TIMESTAMP), f"context feature {feature.name!r}")
            else:
                _require(columns, feature.source, (feature.name,), f"feature {feature.name!r}")
        for name, vocabulary in self.used_vocabularies().items():
            _require(columns, vocabulary.table, (vocabulary.column,), f"vocabulary {name!r}")
        for table, key in ((USER_FEATURES, USER_ID), (ITEM_FEATURES, ITEM_ID)):
            if table in columns and any(f.source == table for f in self.features):
                _require(columns, table, (key,), f"the {table} table")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "vocabularies": {n: {"table": v.table, "column": v.column} for n, v in self.vocabularies.items()},
            # Lists, not mappings: feature order fixes the network's input layout and must survive JSON
            # writers that sort keys.
            "towers": {t: [{"name": f.name, **_feature_dict(f)} for f in self.tower(t)] for t in TOWERS},
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], origin: str = "schema") -> "FeatureSchema":
        return _parse(document, origin)


def _require(columns: Mapping[str, set], table: str, needed: Iterable[str], what: str) -> None:
    if table not in columns:
        raise MalformedDataError(
            f"{what} reads the {table} table, but none was given (pass {table}= to the estimator, "
            "or mark the feature optional in the schema)"
        )
    missing = [c for c in needed if c not in columns[table]]
    if missing:
        raise MalformedDataError(
            f"{what} needs column {', '.join(missing)} of {table}, which it lacks "
            f"(it has {', '.join(sorted(columns[table])) or 'no columns'})"
        )


def _feature_dict(feature: Feature) -> dict[str, Any]:
    document = {k: v for k, v in asdict(feature).items() if k not in ("name", "tower") and v is not None}
    if not feature.is_list:
        document.pop("max_length", None)
    return document


def read_schema_text(name_or_path: str) -> tuple[str, str]:
    """A path to a YAML file, or a shipped schema's name (``dssm_movielens``) → (where it came from, its text).
    Shipped schemas are read as package resources, so they load when the package is imported from a zip."""
    if os.path.exists(name_or_path):
        with open(name_or_path, encoding="utf-8") as stream:
            return name_or_path, stream.read()
    shipped = SHIPPED_SCHEMAS.joinpath(f"{name_or_path}.yaml")
    if shipped.is_file():
        return f"shipped schema {name_or_path}", shipped.read_text(encoding="utf-8")
    available = ", ".join(sorted(f.name[:-5] for f in SHIPPED_SCHEMAS.iterdir() if f.name.endswith(".yaml")))
    raise DataNotFoundError(f"no schema file or shipped schema named {name_or_path!r} (shipped: {available})")


def load_schema(name_or_path: str) -> FeatureSchema:
    """Parse and check a schema YAML file, given by path or by the name of a shipped schema."""
    origin, text = read_schema_text(name_or_path)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MalformedDataError(f"{origin} is not valid YAML: {exc}") from None
    return _parse(document, origin)


def _parse(document: Any, origin: str) -> FeatureSchema:
    def fail(message: str) -> MalformedDataError:
        return MalformedDataError(f"{origin}: {message}")

    if not isinstance(document, Mapping):
        raise fail("a schema is a mapping with keys name, model, vocabularies, towers")
    vocabularies = {}
    for name, spec in (document.get("vocabularies") or {}).items():
        if not isinstance(spec, Mapping) or spec.get("table") not in TABLES or not spec.get("column"):
            raise fail(f"vocabulary {name!r} needs table (one of {', '.join(TABLES)}) and column")
        vocabularies[name] = Vocabulary(name=name, table=spec["table"], column=spec["column"])
    towers = document.get("towers") or {}
    if set(towers) != set(TOWERS):
        raise fail("towers must have exactly the keys user and item")
    parsed = {t: tuple(_parse_feature(n, t, s, vocabularies, fail) for n, s in _named_features(towers[t], fail)) for t in TOWERS}
    schema = FeatureSchema(
        name=str(document.get("name", "schema")),
        model=str(document.get("model", "")),
        vocabularies=vocabularies,
        user=parsed["user"],
        item=parsed["item"],
    )
    _check_structure(schema, fail)
    return schema


def _named_features(tower: Any, fail) -> list[tuple[str, Any]]:
    """A tower as written in YAML (``name: {spec}``) or as saved (``[{name: ..., ...}]``) → (name, spec) pairs."""
    if isinstance(tower, Mapping):
        return list(tower.items())
    if isinstance(tower, list) and all(isinstance(f, Mapping) and "name" in f for f in tower):
        return [(f["name"], {k: v for k, v in f.items() if k != "name"}) for f in tower]
    raise fail("a tower is a mapping of feature name to feature settings")


def _parse_feature(name: str, tower: str, spec: Any, vocabularies: Mapping, fail) -> Feature:
    what = f"feature {tower}.{name}"
    if not isinstance(spec, Mapping):
        raise fail(f"{what} must be a mapping")
    unknown = set(spec) - FEATURE_KEYS
    if unknown:
        raise fail(f"{what} has unknown key(s) {', '.join(sorted(unknown))}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise fail(f"{what}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    source = spec.get("source")
    if source not in SOURCES_BY_TOWER[tower]:
        raise fail(f"{what}: source must be one of {', '.join(SOURCES_BY_TOWER[tower])}, got {source!r}")
    if spec.get("vocabulary") not in vocabularies:
        raise fail(f"{what}: vocabulary {spec.get('vocabulary')!r} is not declared under vocabularies")
    dim = spec.get("embedding_dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise fail(f"{what}: embedding_dim must be a positive integer, got {dim!r}")
    max_length = spec.get("max_length", 1 if kind == CATEGORICAL else None)
    if not isinstance(max_length, int) or max_length < 1:
        raise fail(f"{what}: list features need max_length, a positive integer, got {max_length!r}")
    pooling = spec.get("pooling", "mean" if kind != CATEGORICAL else None)
    if kind != CATEGORICAL and pooling not in POOLINGS:
        raise fail(f"{what}: pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    part = spec.get("part")
    if part is not None and (tower != "user" or part not in PARTS):
        raise fail(f"{what}: part (user tower only) must be one of {', '.join(PARTS)}, got {part!r}")
    if source == CONTEXT and name not in CONTEXT_COLUMNS:
        raise fail(f"{what}: context features are {', '.join(CONTEXT_COLUMNS)}")
    if source == INTERACTIONS and name != ITEM_ID:
        raise fail(f"{what}: the item tower reads only item_id from the interactions")
    return Feature(
        name=name,
        tower=tower,
        kind=kind,
        source=source,
        vocabulary=spec["vocabulary"],
        embedding_dim=dim,
        embedding=str(spec.get("embedding", f"{tower}.{name}")),
        pooling=pooling if kind != CATEGORICAL else None,
        max_length=max_length if kind != CATEGORICAL else 1,
        optional=bool(spec.get("optional", False)),
        part=part,
    )


def _check_structure(schema: FeatureSchema, fail) -> None:
    if not schema.user:
        raise fail("the user tower has no features")
    if not any(f.name == ITEM_ID and f.kind == CATEGORICAL for f in schema.item):
        raise fail("the item tower must have item_id as a categorical feature (the item's identity)")
    if any(f.optional for f in schema.item if f.name == ITEM_ID):
        raise fail("item_id cannot be optional")
    shared: dict[str, Feature] = {}
    for feature in schema.features:
        first = shared.setdefault(feature.embedding, feature)
        if (first.vocabulary, first.embedding_dim) != (feature.vocabulary, feature.embedding_dim):
            raise fail(
                f"features {first.name} and {feature.name} share embedding {feature.embedding!r} "
                "but differ in vocabulary or embedding_dim"
            )


def encoded_column(feature: Feature) -> str:
    """Name of the column holding a feature's embedding indices (raw and encoded columns never collide)."""
    return f"{feature.tower}__{feature.name}"
