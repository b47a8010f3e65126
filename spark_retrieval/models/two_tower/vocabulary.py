"""Id vocabularies built with Spark, and the encoder that turns raw feature values into embedding indices.

A vocabulary is a table ``value, index``: the distinct non-null values sorted ascending and numbered
1..n, so index 0 is free for unknown values and for padding. Encoding broadcasts each vocabulary's
values (one array per vocabulary: n values, the size of a catalog or a user base) and looks them up
with Arrow's hash-based ``index_in`` inside ``mapInArrow``; a vocabulary too large to broadcast would be
applied with a join instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

VALUE = "value"
INDEX = "index"
UNKNOWN_INDEX = 0


def build_vocabulary(values: DataFrame) -> tuple[DataFrame, list]:
    """``values``: one column (scalars or arrays) → the table ``value, index`` (1..n in value order) and its values.

    The distinct values are found and sorted by Spark and collected once: encoders broadcast them anyway.
    """
    (column,) = values.columns
    field_type = values.schema[column].dataType
    if isinstance(field_type, T.ArrayType):
        values = values.select(F.explode(column).alias(column))
        field_type = field_type.elementType
    ordered = [row[0] for row in values.where(F.col(column).isNotNull()).distinct().orderBy(column).collect()]
    schema = T.StructType([T.StructField(VALUE, field_type, False), T.StructField(INDEX, T.IntegerType(), False)])
    table = values.sparkSession.createDataFrame([(v, i) for i, v in enumerate(ordered, start=1)], schema)
    return table, ordered


def vocabulary_values(vocabulary: DataFrame) -> list:
    """A saved vocabulary's values in index order (index i ↔ position i - 1): what encoders broadcast."""
    return [row[VALUE] for row in vocabulary.orderBy(INDEX).collect()]


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
    vocabularies: Mapping[str, object],
    keep: list[str],
) -> DataFrame:
    """``keep`` columns as they are plus one encoded column per encoding (a ``mapInArrow`` pass).

    ``vocabularies`` maps a vocabulary name to a broadcast of its ``vocabulary_values``.
    """
    sources = list(dict.fromkeys(keep + [e.source for e in encodings]))
    fields = [df.schema[c] for c in keep] + [
        T.StructField(e.target, T.IntegerType() if e.width is None else T.ArrayType(T.IntegerType(), False), False)
        for e in encodings
    ]
    output_schema = T.StructType(fields)
    used = {e.vocabulary: vocabularies[e.vocabulary] for e in encodings}

    def encode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        value_sets = {name: pa.array(broadcast.value) for name, broadcast in used.items()}
        for batch in batches:
            arrays = [batch.column(c) for c in keep]
            for e in encodings:
                arrays.append(encode_array(batch.column(e.source), value_sets[e.vocabulary], e.width, e.keep_last))
            yield pa.RecordBatch.from_arrays(arrays, schema=_arrow_schema(output_schema, batch, keep))

    return df.select(*sources).mapInArrow(encode, output_schema)


def _arrow_schema(output_schema: T.StructType, batch: pa.RecordBatch, keep: list[str]) -> pa.Schema:
    fields = [batch.schema.field(c) for c in keep]
    for field in output_schema.fields[len(keep):]:
        arrow_type = pa.int32() if isinstance(field.dataType, T.IntegerType) else pa.list_(pa.field("element", pa.int32(), False))
        fields.append(pa.field(field.name, arrow_type, False))
    return pa.schema(fields)


def encode_array(values: pa.Array, value_set: pa.Array, width: int | None, keep_last: bool) -> pa.Array:
    """Raw values → indices (``index_in`` + 1, unknown and null → 0); lists padded/truncated to ``width``."""
    if width is None:
        return pa.array(_lookup(values, value_set), type=pa.int32())
    lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    codes = _lookup(pc.list_flatten(values), value_set)
    starts = np.cumsum(lengths) - lengths
    rows = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(codes)) - np.repeat(starts, lengths)
    if keep_last:
        position = position - np.repeat(np.maximum(lengths - width, 0), lengths)
    kept = (position >= 0) & (position < width)
    padded = np.zeros((len(lengths), width), dtype=np.int32)
    padded[rows[kept], position[kept]] = codes[kept]
    offsets = pa.array(np.arange(0, padded.size + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(padded.ravel()), type=pa.list_(pa.field("element", pa.int32(), False)))


def _lookup(values: pa.Array, value_set: pa.Array) -> np.ndarray:
    if len(value_set) == 0:
        return np.zeros(len(values), dtype=np.int32)
    if values.type != value_set.type:
        values = values.cast(value_set.type)
    positions = pc.index_in(values, value_set=value_set)
    return (pc.fill_null(positions, -1).to_numpy(zero_copy_only=False) + 1).astype(np.int32)
