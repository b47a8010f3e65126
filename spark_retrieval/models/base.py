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
from typing import Any, ClassVar

from pyspark import StorageLevel
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params
from pyspark.sql import DataFrame, SparkSession

from .. import storage
from ..columns import ITEM_ID, QUERY_ID, USER_ID, require_columns
from ..errors import DataNotFoundError, EmptyDataError, InvalidParameterError, MalformedDataError, OutputWriteError, UserError
from ..validation import Converter, check

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"


def param(name: str, doc: str, converter: Converter) -> Param:
    """Declare a class-level ``pyspark.ml`` Param (the ``Params._dummy()`` parent is replaced per instance).

    ``converter`` (see ``validation``) checks and normalises every value set, so a bad value fails where it
    is given, naming the parameter, whether through the constructor, ``copy(extra)`` or ``fit(train, params)``.
    """
    return Param(Params._dummy(), name, doc, typeConverter=converter)


def require_non_empty(df: DataFrame, what: str) -> None:
    if df.isEmpty():
        raise EmptyDataError(f"{what} is empty: nothing to fit")


class ModelParams(Params):
    """``pyspark.ml`` Params whose bad values are ``InvalidParameterError`` naming the class and parameter.

    Every model's Params mixin declares its Params with ``param(...)`` and sets its defaults with
    ``_setDefault`` in ``__init__``; estimators ``_set`` only the keywords they were given, so ``isSet``,
    ``explainParams()``, ``copy(extra)`` and ``extractParamMap()`` mean what they mean in ``pyspark.ml``.
    """

    def _set(self, **kwargs: Any) -> "ModelParams":
        for name, value in kwargs.items():
            if not self.hasParam(name):
                known = ", ".join(sorted(p.name for p in self.params)) or "none"
                raise InvalidParameterError(f"{type(self).__name__}: unknown parameter {name!r}; its parameters: {known}")
            declared = self.getParam(name)
            if value is not None:
                try:
                    value = declared.typeConverter(value)
                except (InvalidParameterError, TypeError, ValueError) as error:
                    raise InvalidParameterError(f"{type(self).__name__}: {name} {error}") from None
            self._paramMap[declared] = value
        return self

    def get(self, name: str) -> Any:
        return self.getOrDefault(self.getParam(name))

    def params_dict(self) -> dict[str, Any]:
        """Every defined parameter's value (set or default), by name."""
        return {p.name: self.getOrDefault(p) for p in self.params if self.isDefined(p)}


class RetrievalEstimator(Estimator, ModelParams):
    """Base Estimator: keyword-only parameters, then ``fit(train)`` → the family's Model.

    ``Family(**params)`` sets only the parameters given (unknown names and bad values raise
    ``InvalidParameterError``); ``validate_params`` adds the checks that involve several parameters.
    ``fit`` checks the training interactions, delegates to ``_fit_interactions`` and copies the
    parameters onto the model.
    """

    required_columns: ClassVar[tuple[str, ...]] = (USER_ID, ITEM_ID)

    def __init__(self, **params: Any):
        super().__init__()
        self._set(**params)
        self.validate_params()

    def validate_params(self) -> None:
        """Raise ``InvalidParameterError`` for combinations of parameters that cannot work; subclasses extend."""

    def _fit(self, train: DataFrame) -> "RetrievalModel":
        self.validate_params()
        require_columns(train, self.required_columns, "train")
        require_non_empty(train, "train")
        model = self._fit_interactions(train)
        self._copyValues(model)
        return model

    def _fit_interactions(self, train: DataFrame) -> "RetrievalModel":
        raise NotImplementedError


class RetrievalModel(Model, ModelParams):
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

        A write the filesystem refuses (permissions, a full disk, an unknown scheme, denied credentials) is an
        ``OutputWriteError`` naming ``path`` and the reason in one line; the previous copy stays as it was.
        """
        spark = SparkSession.getActiveSession()
        try:
            with storage.atomic_directory(spark, path, overwrite=overwrite) as staging:
                for name, table in self.tables.items():
                    table.write.parquet(f"{staging}/{name}")
                self._save_parts(staging)
                document = {
                    "format_version": FORMAT_VERSION,
                    "class": f"{type(self).__module__}.{type(self).__qualname__}",
                    "params": self.params_dict(),
                    "tables": sorted(self.tables),
                    "files": {name: storage.data_files(spark, f"{staging}/{name}") for name in sorted(self.tables)},
                    "metadata": self.metadata,
                }
                storage.write_text(spark, f"{staging}/{METADATA_FILE}", json.dumps(document, indent=2, sort_keys=True))
        except UserError:
            raise  # "already exists" (overwrite=False) and other mistakes keep their own message
        except Exception as error:
            reason = storage.write_failure(error)
            if reason is None:
                raise  # not the filesystem: a failed computation or a bug, as it is
            raise OutputWriteError(f"could not save the model to {path}: {reason}", destination=path) from None

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
        model._load_parts(path)
        return model

    def _save_parts(self, folder: str) -> None:
        """Write what a model holds besides its tables (other saved models) under ``folder``; none by default."""

    def _load_parts(self, path: str) -> None:
        """Read back what ``_save_parts`` wrote; a missing or damaged part is a ``MalformedDataError``."""


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
