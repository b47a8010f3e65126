"""Id vocabularies built with Spark, and the encoder that turns raw feature values into embedding indices.

A vocabulary is a table ``value, index``: the distinct non-null values sorted ascending and numbered
1..n, so index 0 is free for unknown values and for padding. It is numbered by Spark (``data/ranking.py``:
a range-partitioned sort and one count per partition); the values never reach the driver, only n does.

Encoding joins each feature with its vocabulary. A scalar feature is left-joined on its value (unknown and
null → 0). A list feature is first cut to its kept entries (the first ``width``, or the last ``width`` of a
sequence), then each distinct such list is exploded with its positions, joined, regrouped in position order
and right-padded with 0 to exactly ``width`` entries; the rows are left-joined with that table on the list
itself, so duplicate rows need no key and null or empty lists become all zeros. A vocabulary smaller than
``spark.sql.autoBroadcastJoinThreshold`` (10 MB by default: a catalog's genres, a user's age) is broadcast by
Spark's planner; a larger one (users, items) is joined with a shuffle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ...data.ranking import dense_numbers

VALUE = "value"
INDEX = "index"
UNKNOWN_INDEX = 0


def build_vocabulary(values: DataFrame) -> tuple[DataFrame, int]:
    """``values``: one column (scalars or arrays) → the table ``value, index`` (1..n in value order, persisted) and n."""
    (column,) = values.columns
    if isinstance(values.schema[column].dataType, T.ArrayType):
        values = values.select(F.explode(column).alias(column))
    table, size = dense_numbers(values.select(F.col(column).alias(VALUE)), VALUE, INDEX, start=1, number_type="int")
    return table.select(VALUE, INDEX), size


@dataclass(frozen=True)
class ColumnEncoding:
    """Encode ``source`` into ``target`` with ``vocabulary``.

    ``width`` None: a scalar → ``int``. Otherwise a list → ``array<int>`` of exactly ``width`` entries,
    right-padded with 0; ``keep_last`` keeps the last ``width`` entries of a longer list (sequences, most
    recent last) instead of the first ones (sets).
    """

    source: str
    target: str
    vocabulary: str
    width: int | None = None
    keep_last: bool = False


def encode_columns(
    df: DataFrame,
    encodings: list[ColumnEncoding],
    vocabularies: Mapping[str, DataFrame],
    keep: list[str],
) -> DataFrame:
    """``keep`` columns as they are plus one encoded column per encoding, the rows of ``df`` unchanged.

    ``vocabularies`` maps a vocabulary name to its ``value, index`` table.
    """
    sources = list(dict.fromkeys(keep + [e.source for e in encodings]))
    frame = df.select(*sources)
    targets = []
    for number, encoding in enumerate(encodings):
        vocabulary = vocabularies[encoding.vocabulary]
        if encoding.width is None:
            frame, target = _encode_scalar(frame, encoding, vocabulary, f"_encoded_{number}")
        else:
            frame, target = _encode_list(frame, encoding, vocabulary, f"_encoded_{number}")
        targets.append(target.alias(encoding.target))
    return frame.select(*keep, *targets)


def _encode_scalar(frame: DataFrame, encoding: ColumnEncoding, vocabulary: DataFrame, name: str) -> tuple[DataFrame, Column]:
    key, index = f"{name}_value", f"{name}_index"
    value_type = vocabulary.schema[VALUE].dataType
    indices = vocabulary.select(F.col(VALUE).alias(key), F.col(INDEX).alias(index))
    joined = frame.join(indices, F.col(encoding.source).cast(value_type) == F.col(key), "left").drop(key)
    return joined, F.coalesce(F.col(index), F.lit(UNKNOWN_INDEX))


def _encode_list(frame: DataFrame, encoding: ColumnEncoding, vocabulary: DataFrame, name: str) -> tuple[DataFrame, Column]:
    kept, key, encoded = f"{name}_kept", f"{name}_key", f"{name}_encoded"
    position, element, index = f"{name}_position", f"{name}_element", f"{name}_index"
    width = encoding.width
    value_type = vocabulary.schema[VALUE].dataType
    values = F.col(encoding.source).cast(T.ArrayType(value_type))
    first = F.greatest(F.size(values) - width + 1, F.lit(1)) if encoding.keep_last else F.lit(1)
    frame = frame.withColumn(kept, F.slice(values, first, F.lit(width)))
    lists = frame.select(F.col(kept).alias(key)).where(F.col(key).isNotNull()).distinct()
    indices = vocabulary.select(F.col(VALUE).alias(element), F.col(INDEX).alias(index))
    entries = (
        lists.select(key, F.posexplode(key).alias(position, element))
        .join(indices, element, "left")
        .groupBy(key)
        .agg(F.array_sort(F.collect_list(F.struct(position, index))).alias(encoded))
    )
    codes = F.transform(F.col(encoded), lambda entry: F.coalesce(entry[index], F.lit(UNKNOWN_INDEX)))
    padded = F.concat(codes, F.array_repeat(F.lit(UNKNOWN_INDEX), F.lit(width) - F.size(codes)))
    joined = frame.join(entries, F.col(kept) == F.col(key), "left").drop(kept, key)
    return joined, F.coalesce(F.when(F.col(encoded).isNotNull(), padded), F.array_repeat(F.lit(UNKNOWN_INDEX), width))
