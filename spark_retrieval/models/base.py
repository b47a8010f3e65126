"""Shared Estimator/Model base for every retrieval model.

A model family is an Estimator (``fit(train) -> Model``) and a Model with
``recommend(queries, k) -> DataFrame[query_id, recommendations]`` and ``save``/``load``.
State lives in DataFrames ("tables") plus a JSON metadata file, so a saved model is plain parquet
that other tools can read. Item-to-item models additionally expose ``similar_items(k)``.

Parameters are ``pyspark.ml`` Params: ``model.getOrDefault("k_neighbours")``, ``explainParams()``,
``copy(extra)`` and ``fit(train, params)`` all behave as in ``pyspark.ml``.
"""

from __future__ import annotations

import importlib
import json
from typing import Any, Callable, ClassVar

from pyspark import StorageLevel
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .. import storage
from ..columns import ITEM_ID, LAST_ITEM, NEIGHBOURS, QUERY_ID, RECOMMENDATIONS, SCORE, USER_ID
from ..errors import DataNotFoundError, EmptyDataError, InvalidParameterError, MalformedDataError

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"

SCORED_ITEM = T.StructType([T.StructField(ITEM_ID, T.LongType()), T.StructField(SCORE, T.DoubleType())])
SCORED_ITEMS = T.ArrayType(SCORED_ITEM)


def param(name: str, doc: str, converter: Callable = TypeConverters.identity) -> Param:
    """Declare a class-level ``pyspark.ml`` Param (the ``Params._dummy()`` parent is replaced per instance)."""
    return Param(Params._dummy(), name, doc, typeConverter=converter)


def require_columns(df: DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MalformedDataError(
            f"{what} is missing column(s) {', '.join(missing)}; it has {', '.join(df.columns) or 'no columns'}"
        )


def require_non_empty(df: DataFrame, what: str) -> None:
    if df.isEmpty():
        raise EmptyDataError(f"{what} is empty: nothing to fit")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidParameterError(message)


def empty_recommendations() -> F.Column:
    return F.array().cast(SCORED_ITEMS)


def top_k_items(scored: DataFrame, group_col: str, k: int, out_col: str) -> DataFrame:
    """Per ``group_col``, the ``k`` best ``(item_id, score)`` rows as an array, score desc then item id asc.

    ``scored`` has columns ``group_col, item_id, score``. Uses ``max_by``-free sorting of a collected,
    bounded array: each group keeps at most ``k`` entries thanks to a rank filter first.
    """
    from pyspark.sql.window import Window

    order = Window.partitionBy(group_col).orderBy(F.col(SCORE).desc(), F.col(ITEM_ID).asc())
    ranked = scored.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") <= k)
    return ranked.groupBy(group_col).agg(
        F.transform(
            F.array_sort(F.collect_list(F.struct("_rank", ITEM_ID, SCORE))),
            lambda e: F.struct(e[ITEM_ID].alias(ITEM_ID), e[SCORE].alias(SCORE)),
        ).alias(out_col)
    )


class _ParamsMixin(Params):
    """Keyword construction and plain-dict access for ``pyspark.ml`` Params."""

    def _init_params(self, defaults: dict[str, Any], values: dict[str, Any]) -> None:
        unknown = sorted(set(values) - set(defaults))
        if unknown:
            raise InvalidParameterError(f"{type(self).__name__}: unknown parameter(s) {', '.join(unknown)}")
        self._setDefault(**defaults)
        self._set(**values)

    def get(self, name: str) -> Any:
        return self.getOrDefault(self.getParam(name))

    def params_dict(self) -> dict[str, Any]:
        return {p.name: self.getOrDefault(p) for p in self.params if self.isDefined(p)}


class RetrievalEstimator(Estimator, _ParamsMixin):
    """Base Estimator: validates the training interactions, then delegates to ``_fit_interactions``."""

    required_columns: ClassVar[tuple[str, ...]] = (USER_ID, ITEM_ID)

    def validate_params(self) -> None:
        """Raise ``InvalidParameterError`` for out-of-range parameters; subclasses extend."""

    def _fit(self, train: DataFrame) -> "RetrievalModel":
        self.validate_params()
        require_columns(train, self.required_columns, "train")
        require_non_empty(train, "train")
        model = self._fit_interactions(train)
        model._set(**{p.name: self.getOrDefault(p) for p in self.params if model.hasParam(p.name) and self.isDefined(p)})
        return model

    def _fit_interactions(self, train: DataFrame) -> "RetrievalModel":
        raise NotImplementedError


class RetrievalModel(Model, _ParamsMixin):
    """Base Model: ``recommend`` plus persistence of named tables and JSON metadata."""

    def __init__(self, tables: dict[str, DataFrame] | None = None, metadata: dict[str, Any] | None = None):
        super().__init__()
        self.tables: dict[str, DataFrame] = dict(tables or {})
        self.metadata: dict[str, Any] = dict(metadata or {})

    # -- retrieval ---------------------------------------------------------------------------------
    def recommend(self, queries: DataFrame, k: int) -> DataFrame:
        """Top-``k`` items for each query: ``query_id, recommendations: array<struct<item_id, score>>``."""
        check(isinstance(k, int) and k >= 1, f"k must be a positive integer, got {k!r}")
        require_columns(queries, self.query_columns(), "queries")
        return self._recommend(queries, k)

    def query_columns(self) -> tuple[str, ...]:
        return (QUERY_ID, USER_ID)

    def _recommend(self, queries: DataFrame, k: int) -> DataFrame:
        raise NotImplementedError

    def _transform(self, dataset: DataFrame) -> DataFrame:
        k = self.get("k") if self.hasParam("k") else 20
        return self.recommend(dataset, k)

    def materialize(self) -> "RetrievalModel":
        """Cache every table and compute it now, so training cost is paid here rather than in ``recommend``."""
        for name, table in self.tables.items():
            self.tables[name] = table.persist(StorageLevel.MEMORY_AND_DISK)
            self.tables[name].count()
        return self

    def unpersist(self) -> None:
        for table in self.tables.values():
            table.unpersist()

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str, overwrite: bool = True) -> None:
        """Write every table as parquet plus ``metadata.json``; published atomically (old copy kept until done).

        ``metadata.json`` also lists every data file of every table with its size, so ``load`` can tell a
        complete model from a damaged one without reading the data.
        """
        spark = SparkSession.getActiveSession()
        with storage.atomic_directory(spark, path, overwrite=overwrite) as staging:
            for name, table in self.tables.items():
                table.write.parquet(f"{staging}/{name}")
            document = {
                "format_version": FORMAT_VERSION,
                "class": f"{type(self).__module__}.{type(self).__qualname__}",
                "params": self.params_dict(),
                "tables": sorted(self.tables),
                "files": {name: storage.data_files(spark, f"{staging}/{name}") for name in sorted(self.tables)},
                "metadata": self.metadata,
            }
            storage.write_text(spark, f"{staging}/{METADATA_FILE}", json.dumps(document, indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str) -> "RetrievalModel":
        """Load any saved model; called on a subclass it also checks the saved class matches.

        A missing folder is a ``DataNotFoundError``; a damaged one (unparsable ``metadata.json``, a table or
        data file missing, truncated or added, a newer format) is a ``MalformedDataError`` naming the path.
        """
        spark = SparkSession.getActiveSession()
        meta_path = f"{path}/{METADATA_FILE}"
        if not storage.path_exists(spark, meta_path):
            raise DataNotFoundError(f"no saved model at {path} ({METADATA_FILE} not found)")
        corrupt = f"corrupt saved model at {path}"
        try:
            text = storage.read_text(spark, meta_path)
        except Exception as exc:
            reason = storage.read_failure(exc)
            if reason is None:
                raise
            raise MalformedDataError(f"{corrupt}: {METADATA_FILE}: {reason}") from None
        try:
            document = json.loads(text)
            version = document.get("format_version", FORMAT_VERSION)
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise MalformedDataError(
                    f"{path} was saved in format {version!r}; this version of spark-retrieval reads up to {FORMAT_VERSION}"
                )
            module_name, _, class_name = document["class"].rpartition(".")
            model_cls = getattr(importlib.import_module(module_name), class_name)
            names = list(document["tables"])
            files = document.get("files", {})
            if not isinstance(files, dict):
                raise TypeError(f"'files' is a {type(files).__name__}, not a mapping")
        except (ValueError, KeyError, TypeError, ImportError, AttributeError) as exc:
            if isinstance(exc, MalformedDataError):
                raise
            raise MalformedDataError(f"{corrupt}: {METADATA_FILE}: {type(exc).__name__}: {exc}") from None
        if not issubclass(model_cls, cls):
            raise MalformedDataError(f"{path} holds a {class_name}, not a {cls.__name__}")
        tables = {}
        for name in names:
            table_path = f"{path}/{name}"
            if not storage.path_exists(spark, table_path):
                raise MalformedDataError(f"{corrupt}: table {name!r} is missing")
            expected = files.get(name)
            if expected is not None:
                check_files(storage.data_files(spark, table_path), expected, f"{corrupt}: table {name!r}")
            try:
                tables[name] = spark.read.parquet(table_path)
            except Exception as exc:
                reason = storage.read_failure(exc)
                if reason is None:
                    raise
                raise MalformedDataError(f"{corrupt}: table {name!r}: {reason}") from None
        model = model_cls(tables=tables, metadata=document.get("metadata", {}))
        model._set(**{k: v for k, v in document.get("params", {}).items() if model.hasParam(k)})
        return model


def check_files(found: dict[str, int], expected: dict[str, int], what: str) -> None:
    """Raise ``MalformedDataError`` when ``found`` (file → size) differs from the saved manifest ``expected``."""
    for name, size in sorted(expected.items()):
        if name not in found:
            raise MalformedDataError(f"{what}: data file {name} is missing")
        if found[name] != size:
            raise MalformedDataError(f"{what}: data file {name} has {found[name]} bytes, {size} were saved")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise MalformedDataError(f"{what}: unexpected data file {extra[0]} (not written by save)")


class ItemToItemModel(RetrievalModel):
    """A model holding a neighbour table ``item_id, neighbours: array<struct<item_id, score>>``.

    Queries are answered from their ``last_item``: the neighbours of that item, best first; a query whose
    ``last_item`` is null or unknown to the model gets an empty list.
    """

    NEIGHBOUR_TABLE = "neighbours"

    @property
    def neighbour_table(self) -> DataFrame:
        return self.tables[self.NEIGHBOUR_TABLE]

    def query_columns(self) -> tuple[str, ...]:
        return (QUERY_ID, LAST_ITEM)

    def similar_items(self, k: int | None = None) -> DataFrame:
        """``item_id, neighbours`` with at most ``k`` neighbours each (all that were kept when ``k`` is None)."""
        table = self.neighbour_table
        if k is None:
            return table
        check(isinstance(k, int) and k >= 1, f"k must be a positive integer, got {k!r}")
        return table.select(ITEM_ID, F.slice(NEIGHBOURS, 1, k).alias(NEIGHBOURS))

    def _recommend(self, queries: DataFrame, k: int) -> DataFrame:
        neighbours = self.similar_items(k).withColumnRenamed(ITEM_ID, "_trigger")
        joined = queries.select(QUERY_ID, LAST_ITEM).join(
            neighbours, F.col(LAST_ITEM) == F.col("_trigger"), "left"
        )
        return joined.select(
            QUERY_ID, F.coalesce(F.col(NEIGHBOURS), empty_recommendations()).alias(RECOMMENDATIONS)
        )
