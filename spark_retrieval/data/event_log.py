"""A user's own event log (clicks, plays, purchases) as the interactions every model reads.

An event log names its columns (``user_id=uid,item_id=sku,timestamp=ts[,rating=score]``), holds ids of any
type and timestamps in any common form, and may have no rating at all. ``load_event_log`` turns it into the
protocol's ``user_id, item_id, rating, timestamp`` with Spark alone:

- **Ids** of any type are indexed to dense longs ``0..n-1`` in ascending order of the original value (numbers
  by value, strings by their UTF-8 bytes, so ``"10" < "9"``: pad numeric strings to keep numeric order).
  Ties the protocol breaks by item id are then broken in the original ids' order. The index is two tables
  (``IdIndex``), never a driver-side dictionary; ``IdIndex.decode`` maps lists back to the original ids.
- **Timestamps**: epoch seconds or milliseconds (numbers or numeric strings; milliseconds when the largest
  value is above 1e11), ISO-8601 strings (without a zone they are read as UTC, whatever the session's time
  zone), or Spark timestamp / date columns. All become whole epoch seconds; events of one user within the
  same second keep the protocol's tie-break, item id.
- **No rating column** means implicit feedback: every event is a positive (``rating`` 1.0, threshold 0).
- A ``weight`` column may be named; no model uses it: every event counts once, and the description says so.
- **Side tables** (items, users) get the same dense ids; rows whose id never occurs in the log are dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .. import storage
from ..columns import ITEM_ID, RATING, TIMESTAMP, USER_ID, require_columns
from ..errors import DataNotFoundError, EmptyDataError, InvalidParameterError, MalformedDataError
from .interactions import MILLISECONDS_THRESHOLD, readable
from .ranking import dense_numbers

WEIGHT = "weight"
LOG_COLUMNS = (USER_ID, ITEM_ID, TIMESTAMP, RATING, WEIGHT)
REQUIRED_COLUMNS = (USER_ID, ITEM_ID, TIMESTAMP)
FORMATS = ("parquet", "csv", "json")
IMPLICIT_THRESHOLD = 0.0
"""With no rating every event is rated 1.0, so every held-out event is a query."""

ORIGINAL = "original_id"
_ZONELESS = r"^\s*\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*$"
_DATE_ONLY = r"^\s*\d{4}-\d{2}-\d{2}\s*$"
_NUMBER = r"^\s*-?\d+(\.\d*)?\s*$"


@dataclass(frozen=True)
class EventLog:
    """Where a log is and how to read it. ``columns`` maps our names (``LOG_COLUMNS``) onto the file's;
    unmapped names are looked up as they are. ``items`` / ``users``: optional side tables keyed by the same
    id column as the log, read in ``format`` too. ``format`` None: from the file extension, else parquet."""

    interactions: str
    format: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    items: str | None = None
    users: str | None = None

    def __post_init__(self):
        if self.format is not None and self.format not in FORMATS:
            raise InvalidParameterError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        unknown = sorted(set(self.columns) - set(LOG_COLUMNS))
        if unknown:
            raise InvalidParameterError(
                f"columns: unknown name(s) {', '.join(unknown)}; map some of {', '.join(LOG_COLUMNS)} "
                "onto your columns, e.g. user_id=uid,item_id=sku,timestamp=ts"
            )
        empty = sorted(ours for ours, theirs in self.columns.items() if not str(theirs).strip())
        if empty:
            raise InvalidParameterError(f"columns: no column named for {', '.join(empty)}")

    def format_of(self, path: str) -> str:
        if self.format:
            return self.format
        extension = os.path.splitext(path.rstrip("/"))[1].lower().lstrip(".")
        return {"csv": "csv", "tsv": "csv", "json": "json", "jsonl": "json"}.get(extension, "parquet")

    def column(self, ours: str) -> str:
        return self.columns.get(ours, ours)


def parse_columns(text: str | None) -> dict[str, str]:
    """``"user_id=uid,item_id=sku"`` → ``{"user_id": "uid", "item_id": "sku"}`` (checked by ``EventLog``)."""
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        ours, sep, theirs = part.partition("=")
        if not sep:
            raise InvalidParameterError(f"columns: expected name=column pairs separated by commas, got {part.strip()!r}")
        if ours.strip() in mapping:
            raise InvalidParameterError(f"columns: {ours.strip()} is mapped twice")
        mapping[ours.strip()] = theirs.strip()
    return mapping


@dataclass
class IdIndex:
    """Dense ids of one kind (``user_id`` or ``item_id``) next to the original values (``original_id``)."""

    column: str
    table: DataFrame

    def encode(self, frame: DataFrame, original: str) -> DataFrame:
        """``frame`` with its ``original`` column replaced by the dense ``column``; unknown ids are dropped."""
        index = self.table.withColumnRenamed(ORIGINAL, original)
        return frame.join(index, original, "inner").drop(original)

    def decode(self, frame: DataFrame, column: str | None = None) -> DataFrame:
        """``frame`` with the dense ids in ``column`` (default: this index's column) replaced by the original
        ids, in place and order. ``column`` holds an id, an array of ids, or an array of structs with a field
        named like this index's column (``recommend``'s ``recommendations``, ``similar_items``'s ``neighbours``)."""
        column = column or self.column
        kind = frame.schema[column].dataType
        if not isinstance(kind, T.ArrayType):
            named = self.table.withColumnRenamed(self.column, column)
            return frame.join(named, column, "left").drop(column).withColumnRenamed(ORIGINAL, column).select(*frame.columns)
        nested = isinstance(kind.elementType, T.StructType)
        if nested and self.column not in kind.elementType.fieldNames():
            raise InvalidParameterError(f"{column}: its structs have no {self.column} field to decode")
        key = "_decode_key"
        exploded = frame.withColumn(key, F.monotonically_increasing_id()).select(
            "*", F.posexplode_outer(column).alias("_position", "_element")
        )
        dense = F.col("_element")[self.column] if nested else F.col("_element")
        index = self.table.withColumnRenamed(self.column, "_dense").withColumnRenamed(ORIGINAL, "_original")
        joined = exploded.withColumn("_dense", dense).join(index, "_dense", "left")
        value = F.col("_element").withField(self.column, F.col("_original")) if nested else F.col("_original")
        entry = F.when(F.col("_position").isNotNull(), F.struct(F.col("_position"), value.alias("_value")))
        others = [name for name in frame.columns if name != column]
        lists = joined.groupBy(key).agg(
            *[F.first(name).alias(name) for name in others],
            F.transform(F.array_sort(F.collect_list(entry)), lambda item: item["_value"]).alias(column),
        )
        return lists.select(*frame.columns)

    def save(self, path: str) -> None:
        self.table.write.mode("overwrite").parquet(path)


@dataclass
class LoadedLog:
    """``ratings``: the protocol's interactions on dense ids; ``users`` / ``items``: the id indexes; the side
    tables on dense ids (None when not given); ``description``: what was read and how, for headers and JSON."""

    ratings: DataFrame
    users: IdIndex
    items: IdIndex
    item_features: DataFrame | None
    user_features: DataFrame | None
    implicit: bool
    description: dict[str, Any]

    def positive_threshold(self, requested: float | None, default: float) -> float:
        """The threshold to split with: ``requested`` (or ``default``) with ratings; 0 for implicit feedback,
        where asking for one is an error (there is no rating to compare)."""
        if not self.implicit:
            return default if requested is None else requested
        if requested is not None:
            raise InvalidParameterError(
                f"{self.description['source']} has no rating column, so every event is a positive: "
                "drop the positive threshold or name the rating column (rating=<column>)"
            )
        return IMPLICIT_THRESHOLD

    def unpersist(self) -> None:
        for index in (self.users, self.items):
            index.table.unpersist()


def read_table(spark: SparkSession, path: str, format: str, what: str) -> DataFrame:
    path = str(path)
    if not any(char in path for char in "*?[{") and not storage.path_exists(spark, path):
        raise DataNotFoundError(f"{what} not found: {path}")
    if format == "csv":
        sep = "\t" if path.lower().endswith(".tsv") else ","
        reader = lambda: spark.read.options(header=True, sep=sep).csv(path)  # noqa: E731
    elif format == "json":
        reader = lambda: spark.read.json(path)  # noqa: E731
    else:
        reader = lambda: spark.read.parquet(path)  # noqa: E731
    frame = readable(reader, f"{path} (read as {format})")
    if not frame.columns:
        raise EmptyDataError(f"{path} is empty")
    return frame


def _quoted(name: str) -> Column:
    return F.col("`" + name.replace("`", "``") + "`")


def load_event_log(spark: SparkSession, log: EventLog) -> LoadedLog:
    """Read, check and index ``log``; see the module docstring for what is accepted.

    Raises ``DataNotFoundError`` for a missing path, ``MalformedDataError`` naming the file and column for a
    missing column, null ids, a timestamp column that is none of the accepted forms (with an example value),
    or a non-numeric rating, and ``EmptyDataError`` for an empty log. The checks share one aggregation.
    """
    path = log.interactions
    raw = read_table(spark, path, log.format_of(path), "interactions")
    implicit = RATING not in log.columns and RATING not in raw.columns
    wanted = [ours for ours in LOG_COLUMNS if ours in REQUIRED_COLUMNS or ours in log.columns or (ours == RATING and not implicit)]
    names = {ours: log.column(ours) for ours in wanted}
    require_columns(raw, names.values(), path, renamed=names)
    events = raw.select(*[_quoted(theirs).alias(f"_raw_{ours}") for ours, theirs in names.items()])
    stamp = "_raw_" + TIMESTAMP
    rating = F.lit(1.0) if implicit else F.col("_raw_" + RATING).try_cast("double")
    problems = {
        f"a missing {names[USER_ID]} (user id)": F.col("_raw_" + USER_ID).isNull(),
        f"a missing {names[ITEM_ID]} (item id)": F.col("_raw_" + ITEM_ID).isNull(),
        f"a missing {names[TIMESTAMP]} (timestamp)": F.col(stamp).isNull(),
    }
    if not implicit:
        problems[f"a missing, non-numeric or NaN {names[RATING]} (rating)"] = rating.isNull() | F.isnan(rating)
    stats = timestamp_statistics(events, stamp, path, names[TIMESTAMP])
    counts = readable(
        lambda: events.agg(
            F.count(F.lit(1)).alias("_rows"),
            *[F.count(F.when(predicate, 1)).alias(f"_p{i}") for i, predicate in enumerate(problems.values())],
            *[column.alias(name) for name, column in stats.items()],
        ).first(),
        path,
    )
    if counts["_rows"] == 0:
        raise EmptyDataError(f"{path} is empty: no events")
    found = [f"{counts[f'_p{i}']} event(s) with {name}" for i, name in enumerate(problems) if counts[f"_p{i}"]]
    if found:
        raise MalformedDataError(f"{path}: " + "; ".join(found))
    timestamp_form, timestamp = timestamp_seconds(events, stamp, path, names[TIMESTAMP], counts)
    typed = events.select(
        F.col("_raw_" + USER_ID).alias("_user"),
        F.col("_raw_" + ITEM_ID).alias("_item"),
        rating.alias(RATING),
        timestamp.alias(TIMESTAMP),
    )

    users = dense_index(typed.select(F.col("_user").alias(ORIGINAL)), USER_ID)
    items = dense_index(typed.select(F.col("_item").alias(ORIGINAL)), ITEM_ID)
    ratings = items.encode(users.encode(typed, "_user"), "_item").select(USER_ID, ITEM_ID, RATING, TIMESTAMP)

    item_features = side_table(spark, log, log.items, ITEM_ID, items, "items")
    user_features = side_table(spark, log, log.users, USER_ID, users, "users")
    description = {
        "source": path,
        "format": log.format_of(path),
        "columns": names,
        "timestamps": timestamp_form,
        "feedback": "implicit: no rating column, every event is a positive" if implicit else f"explicit: {names[RATING]}",
        "id_types": {USER_ID: raw.schema[names[USER_ID]].dataType.simpleString(),
                     ITEM_ID: raw.schema[names[ITEM_ID]].dataType.simpleString()},
        "items": log.items,
        "users": log.users,
    }
    if WEIGHT in names:
        description["ignored"] = f"{names[WEIGHT]} (weight): no model uses event weights; every event counts once"
    return LoadedLog(ratings, users, items, item_features, user_features, implicit, description)


def timestamp_statistics(events: DataFrame, column: str, path: str, shown: str) -> dict[str, Column]:
    """The aggregates ``timestamp_seconds`` decides the form from (none for timestamp/date columns); a column of
    another type raises ``MalformedDataError`` naming it."""
    kind = events.schema[column].dataType
    raw = F.col(column)
    if isinstance(kind, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return {}
    if isinstance(kind, T.NumericType):
        return {"_ts_largest": F.max(F.abs(raw.cast("double")))}
    if not isinstance(kind, T.StringType):
        raise MalformedDataError(
            f"{path}: column {shown} (timestamp) is {kind.simpleString()}; expected epoch seconds or milliseconds, "
            "ISO-8601 strings, or a timestamp/date column"
        )
    text = F.trim(raw)
    numeric = text.rlike(_NUMBER)
    bad = ~numeric & iso_seconds(text).isNull() & raw.isNotNull()
    return {
        "_ts_present": F.count(raw),
        "_ts_numeric": F.count(F.when(numeric, 1)),
        "_ts_bad": F.count(F.when(bad, 1)),
        "_ts_example": F.min(F.when(bad, raw)),
        "_ts_largest": F.max(F.when(numeric, F.abs(text.cast("double")))),
    }


def timestamp_seconds(
    events: DataFrame, column: str, path: str, shown: str, stats: Mapping[str, Any] | None = None
) -> tuple[str, Column]:
    """Which form ``column`` holds and an expression turning it into whole epoch seconds. ``stats``: the row
    holding ``timestamp_statistics``'s aggregates when the caller computed them (else one aggregation here).
    Null timestamps are the caller's to report; a mix of forms or unparseable strings raise here."""
    kind = events.schema[column].dataType
    raw = F.col(column)
    if stats is None:
        wanted = timestamp_statistics(events, column, path, shown)
        stats = events.agg(*[c.alias(n) for n, c in wanted.items()]).first() if wanted else {}
    if isinstance(kind, (T.TimestampType, T.TimestampNTZType)):
        return "Spark timestamps", F.floor(F.unix_micros(raw.cast("timestamp")) / 1_000_000).cast("long")
    if isinstance(kind, T.DateType):
        return "Spark dates", (F.unix_date(raw).cast("long") * 86_400)
    if isinstance(kind, T.NumericType):
        return _epoch(raw.cast("double"), stats["_ts_largest"])
    text = F.trim(raw)
    if stats["_ts_present"] and stats["_ts_numeric"] == stats["_ts_present"]:
        return _epoch(text.cast("double"), stats["_ts_largest"])
    if stats["_ts_bad"] == 0:
        if stats["_ts_numeric"]:
            raise MalformedDataError(
                f"{path}: column {shown} (timestamp) mixes numbers and ISO-8601 strings; use one form"
            )
        return "ISO-8601 strings (zone-less ones read as UTC)", iso_seconds(text).cast("long")
    raise MalformedDataError(
        f"{path}: column {shown} (timestamp): {stats['_ts_bad']} value(s) are neither epoch seconds/milliseconds nor "
        f"ISO-8601 date-times, e.g. {stats['_ts_example']!r}"
    )


def iso_seconds(text: Column) -> Column:
    """Epoch seconds of an ISO-8601 string, null when it is not one; a string without a zone is UTC."""
    zoned = (
        F.when(text.rlike(_DATE_ONLY), F.concat(text, F.lit("T00:00:00Z")))
        .when(text.rlike(_ZONELESS), F.concat(text, F.lit("Z")))
        .otherwise(text)
    )
    return F.floor(F.unix_micros(zoned.try_cast("timestamp")) / 1_000_000)


def _epoch(number: Column, largest) -> tuple[str, Column]:
    milliseconds = largest is not None and largest > MILLISECONDS_THRESHOLD
    seconds = F.floor(number / 1000) if milliseconds else F.floor(number)
    return ("epoch milliseconds" if milliseconds else "epoch seconds"), seconds.cast("long")


def dense_index(values: DataFrame, column: str) -> IdIndex:
    """``column`` = 0..n-1 over the distinct ``original_id`` values in ascending order, computed with a range
    partitioning and one small per-partition count (one row per partition reaches the driver)."""
    table, _ = dense_numbers(values, ORIGINAL, column)
    return IdIndex(column, table)


def side_table(spark: SparkSession, log: EventLog, path: str | None, column: str, index: IdIndex, what: str) -> DataFrame | None:
    """The ``items`` / ``users`` table on dense ids: its id column is named as in the log; rows whose id is not
    in the log are dropped, and every other column is kept for the two-tower schema to read by name."""
    if path is None:
        return None
    frame = read_table(spark, path, log.format_of(path), what)
    theirs = log.column(column)
    require_columns(frame, [theirs], path, renamed={column: theirs})
    renamed = frame.withColumnRenamed(theirs, "_side_original")
    return index.encode(renamed, "_side_original").select(column, *[c for c in renamed.columns if c != "_side_original"])
