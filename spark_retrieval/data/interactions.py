"""A user's own interaction files, and the validation every loader applies to interactions.

Validation is one aggregation over the data. Only when it finds something wrong does a second query look
for the first offending record and, for text files, report its file and line number.
"""

from __future__ import annotations

from functools import reduce
from typing import Callable, Mapping, TypeVar

from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .. import storage
from ..columns import INTERACTION_COLUMNS, ITEM_ID, RATING, TIMESTAMP, USER_ID, require_columns
from ..errors import DataNotFoundError, EmptyDataError, InvalidParameterError, MalformedDataError

INTERACTION_TYPES = {USER_ID: "long", ITEM_ID: "long", RATING: "double", TIMESTAMP: "long"}
MILLISECONDS_THRESHOLD = 1e11
"""A seconds timestamp above this lies after the year 5000: the data are in milliseconds."""

FILE, BLOCK, ROW, LINE = "_file", "_block", "_row", "_line"
POSITION = (FILE, BLOCK, ROW)

T_ = TypeVar("T_")
Locate = Callable[[Column], "str | None"]
"""Given a predicate over the checked rows, describe where the first row matching it came from."""


def id_problems(column: str) -> dict[str, Column]:
    return {
        f"a missing or non-integer {column}": F.col(column).isNull(),
        f"a negative {column}": F.col(column) < 0,
    }


def interaction_problems() -> dict[str, Column]:
    return {
        **id_problems(USER_ID),
        **id_problems(ITEM_ID),
        "a missing, non-numeric or NaN rating": F.col(RATING).isNull() | F.isnan(F.col(RATING)),
        "a missing or non-integer timestamp": F.col(TIMESTAMP).isNull(),
    }


def with_position(df: DataFrame) -> DataFrame:
    """Add each record's file, split start and scan order, enough to count the lines before it later.

    Call it directly on a file-source DataFrame. The ids are stable across queries over the same files,
    and a filter never moves below the nondeterministic id, so counts over this frame see every record.
    """
    return df.select(
        "*",
        F.col("_metadata.file_path").alias(FILE),
        F.col("_metadata.file_block_start").alias(BLOCK),
        F.monotonically_increasing_id().alias(ROW),
    )


def read_lines(spark: SparkSession, path: str, encoding: str = "UTF-8") -> DataFrame:
    """Every line of the text file(s) at ``path`` as ``_line`` (decoded from ``encoding``), with its position.

    Spark's text source keeps each line's raw bytes, so casting to binary and decoding handles any charset.
    """
    lines = with_position(spark.read.text(path))
    text = F.col("value")
    if encoding.replace("-", "").upper() != "UTF8":
        text = F.decode(text.cast("binary"), encoding)
    return lines.select(text.alias(LINE), *POSITION)


def line_locator(records: DataFrame, header_lines: int = 0, is_data: Column | None = None) -> Locate:
    """A ``Locate`` over ``records`` (built on ``with_position``): "FILE line N: 'TEXT'" for the first match.

    ``records`` may hold lines that are not data (headers, blank lines): ``is_data`` selects the data rows
    to search, and every record counts towards line numbers. ``header_lines`` counts lines in each file
    that are not among ``records`` at all (a header the CSV reader dropped).
    """

    def locate(predicate: Column) -> str | None:
        shown = [LINE] if LINE in records.columns else []
        searched = records.where(predicate if is_data is None else is_data & predicate)
        first = searched.orderBy(*POSITION).select(*POSITION, *shown).first()
        if first is None:
            return None
        earlier_in_file = (F.col(FILE) == first[FILE]) & (
            (F.col(BLOCK) < first[BLOCK]) | ((F.col(BLOCK) == first[BLOCK]) & (F.col(ROW) < first[ROW]))
        )
        line = records.where(earlier_in_file).count() + header_lines + 1
        text = f": {first[LINE]!r}" if shown else ""
        return f"{first[FILE]} line {line}{text}"

    return locate


def check_rows(
    df: DataFrame,
    source: str,
    problems: Mapping[str, Column],
    locate: Locate | None = None,
    extra: Mapping[str, Column] | None = None,
) -> Row:
    """One aggregation: count rows, rows matching each ``problems`` predicate, and the ``extra`` aggregates.

    Raises ``EmptyDataError`` when there are no rows and ``MalformedDataError`` listing every problem found
    (plus where the first bad row is, when ``locate`` is given). Returns the row of aggregates otherwise.
    """
    named = list(problems.items())
    counts = [F.count(F.when(predicate, 1)).alias(f"_problem{i}") for i, (_, predicate) in enumerate(named)]
    extras = [column.alias(name) for name, column in (extra or {}).items()]
    totals = readable(lambda: df.agg(F.count(F.lit(1)).alias("_rows"), *counts, *extras).first(), source)
    if totals["_rows"] == 0:
        raise EmptyDataError(f"{source} is empty")
    found = [(name, totals[f"_problem{i}"]) for i, (name, _) in enumerate(named) if totals[f"_problem{i}"]]
    if found:
        message = f"{source}: " + "; ".join(f"{count} row(s) with {name}" for name, count in found)
        where = locate(reduce(Column.__or__, (problems[name] for name, _ in found))) if locate else None
        raise MalformedDataError(message + (f"; first bad record at {where}" if where else ""))
    return totals


def readable(action: Callable[[], T_], source: str) -> T_:
    """Run ``action`` (a Spark read or query); a file that cannot be read becomes ``MalformedDataError``."""
    try:
        return action()
    except Exception as error:
        reason = storage.read_failure(error)
        if reason is None:
            raise
        raise MalformedDataError(f"{source} cannot be read: {reason}") from None


def _column(name: str) -> Column:
    return F.col("`" + name.replace("`", "``") + "`")


def typed_interaction_columns(df: DataFrame) -> list[Column]:
    """``df``'s interaction columns cast to their exact types; values that do not convert become null.

    A timestamp or date ``timestamp`` column becomes seconds since the epoch.
    """
    timestamp = F.col(TIMESTAMP)
    if isinstance(df.schema[TIMESTAMP].dataType, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        timestamp = F.unix_timestamp(timestamp.cast("timestamp"))
    columns = {**{name: F.col(name) for name in INTERACTION_COLUMNS}, TIMESTAMP: timestamp}
    return [columns[name].try_cast(INTERACTION_TYPES[name]).alias(name) for name in INTERACTION_COLUMNS]


def validate_interactions(df: DataFrame, source: str, locate: Locate | None = None) -> DataFrame:
    """Check ``df`` holds usable interactions and return it as exactly ``user_id, item_id, rating, timestamp``.

    Raises ``MalformedDataError`` for a missing column, null or negative ids, missing/non-numeric/NaN
    ratings, missing timestamps or timestamps in milliseconds, and ``EmptyDataError`` when there are no rows.
    All checks share one aggregation; ``locate`` (see ``line_locator``) adds where the first bad row is.
    """
    require_columns(df, INTERACTION_COLUMNS, source)
    typed = df.select(*typed_interaction_columns(df))
    totals = check_rows(
        typed, source, interaction_problems(), locate, extra={"max_timestamp": F.max(TIMESTAMP)}
    )
    if totals["max_timestamp"] > MILLISECONDS_THRESHOLD:
        raise MalformedDataError(
            f"{source}: timestamps look like milliseconds (largest is {totals['max_timestamp']}); "
            "expected seconds since 1970 — divide them by 1000"
        )
    return typed


def load_interactions(
    spark: SparkSession,
    path: str,
    format: str = "parquet",
    columns: Mapping[str, str] | None = None,
    **csv_options,
) -> DataFrame:
    """Load interactions from parquet or CSV (with a header) into ``user_id, item_id, rating, timestamp``.

    ``columns`` maps our column names onto the file's, e.g. ``{"user_id": "uid", "item_id": "movie"}``;
    unmapped columns are expected under our names. ``csv_options`` go to Spark's CSV reader
    (``sep="\\t"``, ...). Timestamps must be seconds since 1970 (or a timestamp/date column).
    Errors in CSV files name the file and line of the first bad record.
    """
    if format not in ("parquet", "csv"):
        raise InvalidParameterError(f"format must be 'parquet' or 'csv', got {format!r}")
    unknown = sorted(set(columns or {}) - set(INTERACTION_COLUMNS))
    if unknown:
        raise InvalidParameterError(
            f"columns maps unknown name(s) {', '.join(unknown)}; the keys must be among {', '.join(INTERACTION_COLUMNS)}"
        )
    path = str(path)
    if not any(char in path for char in "*?[{") and not storage.path_exists(spark, path):
        raise DataNotFoundError(f"interactions not found: {path}")
    names = {ours: ours for ours in INTERACTION_COLUMNS} | dict(columns or {})

    reader = spark.read.options(header=True, **csv_options).csv if format == "csv" else spark.read.parquet
    raw = readable(lambda: reader(path), f"{path} (read as {format})")
    if not raw.columns:
        raise EmptyDataError(f"{path} is empty")
    require_columns(raw, names.values(), path, renamed=names)
    ours = [_column(theirs).alias(ours) for ours, theirs in names.items()]
    if format == "parquet":
        return validate_interactions(raw.select(*ours), path)

    records = with_position(raw).select(*ours, *POSITION)
    records = records.select(*typed_interaction_columns(records), *POSITION)
    header_lines = 1 if str(csv_options.get("header", True)).lower() == "true" else 0
    return validate_interactions(records, path, line_locator(records, header_lines))
