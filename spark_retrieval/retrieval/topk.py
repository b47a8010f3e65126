"""Exact top-K by inner product for every query, computed in blocks with numpy in the Python workers.

Used by every embedding model (ALS and the two-towers). Two execution paths give identical lists:

* **broadcast** (catalog up to ``max_broadcast_bytes`` and half of ``spark.driver.maxResultSize``): the item
  matrix is collected once, broadcast, and each query batch is scored against it in ``mapInArrow``;
* **block cross-join** (larger catalogs): items are hashed into blocks and queries into groups of about
  ``block_bytes`` each; every (query group, item block) pair is scored in a cogroup, keeping a partial top-K per
  query and block, and the partial lists are merged per query.

Ordering is score descending, then item id ascending, exactly. The matmul only *selects candidates*: every item
whose approximate score reaches a lower bound on the approximate k-th score minus a bound on the rounding error
is kept (the bound comes from chunk maxima, so no full selection over a row is needed), and
candidates are rescored with a fixed-order float64 sum of the stored vector components. A (query, item) score is
therefore the same bits whatever batch, block or path computed it, so ties at the k-th place break by item id
in both paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_type

from ..columns import ITEM_ID, QUERY_ID, RECOMMENDATIONS, SCORE, SCORED_ITEMS, empty_recommendations, require_columns
from ..errors import InvalidParameterError, MalformedDataError

DEFAULT_QUERY_BATCH_SIZE = 4096
DEFAULT_MAX_BROADCAST_BYTES = 2 << 30
DEFAULT_BLOCK_BYTES = 256 << 20
SCORE_MATRIX_CELLS = 1 << 25  # cap on one (queries x items) approximate score matrix: 128 MiB as float32
RESCORE_CELLS = 1 << 23  # cap on one gathered (candidates x dim) float64 array: 64 MiB
CHUNKS_PER_RESULT = 8  # column chunks per kept item when bounding the k-th score (see _candidate_threshold)

_BLOCK = "_block"
_GROUP = "_group"
_QUERY_VECTOR = "_query_vector"
_EXCLUDED = "_excluded"
_ITEM_VECTOR = "_item_vector"
_NUMPY_DTYPES = {T.FloatType(): np.float32, T.DoubleType(): np.float64}


@dataclass(frozen=True)
class ItemBlock:
    """Items sorted by id, their vectors as one matrix, and the largest vector norm (for the error bound)."""

    ids: np.ndarray
    matrix: np.ndarray
    max_norm: float


@dataclass(frozen=True)
class CatalogShape:
    count: int
    dim: int
    dtype: type

    @property
    def matrix_bytes(self) -> int:
        return self.count * self.dim * np.dtype(self.dtype).itemsize


def top_k_inner_product(
    queries: DataFrame,
    items: DataFrame,
    k: int,
    *,
    query_vector: str = "vector",
    item_vector: str = "vector",
    exclude_column: str | None = None,
    normalize: bool = False,
    query_batch_size: int = DEFAULT_QUERY_BATCH_SIZE,
    max_broadcast_bytes: int = DEFAULT_MAX_BROADCAST_BYTES,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> DataFrame:
    """``query_id, recommendations``: each query's ``k`` items with the largest inner product, best first.

    ``queries``: ``query_id`` (any type), ``query_vector`` (array<float|double>) and optionally
    ``exclude_column`` (array<long>: item ids never to return for that query). ``items``: ``item_id``
    (unique) and ``item_vector``. ``normalize=True`` scores by cosine similarity instead. A list holds
    ``min(k, eligible items)`` entries; a query whose vector is null gets an empty list. Ties break by item id.

    The item matrix is broadcast when it takes at most ``max_broadcast_bytes`` and at most half of
    ``spark.driver.maxResultSize`` (it is collected to the driver first; one count decides);
    otherwise the block cross-join runs with blocks of about ``block_bytes``. ``query_batch_size`` bounds the
    queries scored by one numpy matmul.
    """
    _check_arguments(k, query_batch_size, max_broadcast_bytes, block_bytes)
    exclude = [exclude_column] if exclude_column else []
    require_columns(queries, [QUERY_ID, query_vector, *exclude], "queries")
    require_columns(items, [ITEM_ID, item_vector], "items")
    _require_vector(queries, query_vector, "queries")
    _require_vector(items, item_vector, "items")
    if exclude_column:
        _require_id_array(queries, exclude_column)

    query_table = queries.select(
        QUERY_ID,
        _vector(queries, query_vector, normalize).alias(_QUERY_VECTOR),
        (F.col(exclude_column).cast("array<long>") if exclude_column else F.lit(None).cast("array<long>")).alias(
            _EXCLUDED
        ),
    )
    item_table = items.select(
        F.col(ITEM_ID).cast("long").alias(ITEM_ID), _vector(items, item_vector, normalize).alias(_ITEM_VECTOR)
    )
    shape = catalog_shape(item_table)
    output_schema = T.StructType([queries.schema[QUERY_ID], T.StructField(RECOMMENDATIONS, SCORED_ITEMS)])
    if shape.count == 0:
        return query_table.select(QUERY_ID, empty_recommendations().alias(RECOMMENDATIONS))
    if shape.matrix_bytes <= min(max_broadcast_bytes, collectable_bytes(queries.sparkSession)):
        return _broadcast_top_k(query_table, item_table, shape, k, query_batch_size, output_schema)
    return _block_cross_join_top_k(query_table, item_table, shape, k, query_batch_size, block_bytes, output_schema)


def collectable_bytes(spark: SparkSession) -> float:
    """Half of ``spark.driver.maxResultSize`` (unlimited when that is 0): the largest item matrix the broadcast
    path collects, leaving room for the ids and list offsets that travel with it."""
    limit = spark.sparkContext._jsc.sc().conf().getSizeAsBytes("spark.driver.maxResultSize", "1g")
    return limit / 2 if limit > 0 else math.inf


# -- argument and schema checks --------------------------------------------------------------------------------
def _check_arguments(k, query_batch_size, max_broadcast_bytes, block_bytes) -> None:
    for name, value, minimum in (
        ("k", k, 1),
        ("query_batch_size", query_batch_size, 1),
        ("max_broadcast_bytes", max_broadcast_bytes, 0),
        ("block_bytes", block_bytes, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _require_vector(df: DataFrame, column: str, what: str) -> None:
    data_type = df.schema[column].dataType
    if not (isinstance(data_type, T.ArrayType) and data_type.elementType in _NUMPY_DTYPES):
        raise MalformedDataError(f"{what}.{column} must be array<float> or array<double>, got {data_type.simpleString()}")


def _require_id_array(df: DataFrame, column: str) -> None:
    data_type = df.schema[column].dataType
    if not (isinstance(data_type, T.ArrayType) and isinstance(data_type.elementType, T.IntegralType)):
        raise MalformedDataError(f"queries.{column} must be an array of item ids, got {data_type.simpleString()}")


def _vector(df: DataFrame, column: str, normalize: bool):
    vector = F.col(column)
    if not normalize:
        return vector
    element_type = df.schema[column].dataType.elementType
    # A fixed-order SQL fold, so a vector normalises to the same bits on either execution path.
    norm = F.sqrt(F.aggregate(vector, F.lit(0.0), lambda acc, x: acc + x.cast("double") * x.cast("double")))
    return F.when(norm > 0, F.transform(vector, lambda x: (x / norm).cast(element_type))).otherwise(vector)


def catalog_shape(item_table: DataFrame) -> CatalogShape:
    """Item count and vector dimension from one aggregation; rejects nulls, ragged vectors and duplicate ids."""
    vector = F.col(_ITEM_VECTOR)
    row = item_table.agg(
        F.count(F.lit(1)).alias("count"),
        F.count_distinct(ITEM_ID).alias("distinct_ids"),
        F.count(F.when(F.col(ITEM_ID).isNull() | vector.isNull(), 1)).alias("nulls"),
        F.min(F.size(vector)).alias("min_dim"),
        F.max(F.size(vector)).alias("max_dim"),
    ).first()
    if row["nulls"]:
        raise MalformedDataError(f"items: {row['nulls']} row(s) with a null item_id or vector")
    if row["distinct_ids"] != row["count"]:
        raise MalformedDataError(f"items: {row['count'] - row['distinct_ids']} duplicate item_id(s)")
    if row["count"] and (row["min_dim"] != row["max_dim"] or row["min_dim"] < 1):
        raise MalformedDataError(f"items: vector sizes range from {row['min_dim']} to {row['max_dim']}")
    dtype = _NUMPY_DTYPES[item_table.schema[_ITEM_VECTOR].dataType.elementType]
    return CatalogShape(count=row["count"], dim=row["max_dim"] or 0, dtype=dtype)


# -- numpy core: one query matrix against one item block ------------------------------------------------------
def item_block(ids: np.ndarray, matrix: np.ndarray) -> ItemBlock:
    order = np.argsort(ids, kind="stable")
    matrix = np.ascontiguousarray(matrix[order])
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64))
    finite = norms[np.isfinite(norms)]  # an item with NaN components only ever scores NaN, and is skipped
    max_norm = float(finite.max()) if len(finite) else 0.0
    return ItemBlock(ids=ids[order].astype(np.int64), matrix=matrix, max_norm=max_norm)


def block_top_k(
    queries: np.ndarray,
    excluded_rows: np.ndarray,
    excluded_ids: np.ndarray,
    block: ItemBlock,
    k: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query row's top ``k`` items of ``block``: ``(counts per row, item ids, scores)``, rows concatenated.

    ``excluded_rows``/``excluded_ids`` (sorted by row) pair a query row with an item id it must not get.
    """
    rows_per_batch = max(1, min(batch_size, SCORE_MATRIX_CELLS // max(1, len(block.ids))))
    counts, ids, scores = [], [], []
    for start in range(0, len(queries), rows_per_batch):
        stop = min(start + rows_per_batch, len(queries))
        lo, hi = np.searchsorted(excluded_rows, [start, stop])
        batch = _batch_top_k(queries[start:stop], excluded_rows[lo:hi] - start, excluded_ids[lo:hi], block, k)
        for part, out in zip(batch, (counts, ids, scores)):
            out.append(part)
    if not counts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(counts), np.concatenate(ids), np.concatenate(scores)


def _batch_top_k(queries, excluded_rows, excluded_ids, block: ItemBlock, k: int):
    approx = queries.astype(block.matrix.dtype, copy=False) @ block.matrix.T
    _mask_excluded(approx, excluded_rows, excluded_ids, block.ids)
    threshold = _candidate_threshold(approx, queries, block, k)
    selected = approx >= threshold[:, None]  # a NaN score is never selected
    if np.isneginf(threshold).any():  # fewer than k scores above -inf: drop the excluded (-inf) items
        selected &= approx > -np.inf
    rows, cols = np.nonzero(selected)
    exact = exact_scores(queries, block.matrix, rows, cols)
    candidate_ids = block.ids[cols]
    order = np.lexsort((candidate_ids, -exact, rows))
    rows, candidate_ids, exact = rows[order], candidate_ids[order], exact[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    keep = rank < k
    return np.bincount(rows[keep], minlength=len(queries)), candidate_ids[keep], exact[keep]


def _mask_excluded(approx, excluded_rows, excluded_ids, block_ids) -> None:
    if len(excluded_ids) == 0 or len(block_ids) == 0:
        return
    position = np.minimum(np.searchsorted(block_ids, excluded_ids), len(block_ids) - 1)
    found = block_ids[position] == excluded_ids
    approx[excluded_rows[found], position[found]] = -np.inf


def _candidate_threshold(approx, queries, block: ItemBlock, k: int) -> np.ndarray:
    """Per row: a lower bound on the approximate k-th score minus twice a bound on the matmul's and the
    rescoring's rounding error.

    Every item of the exact top k scores at least that much approximately, so no true top-k item is lost.
    The lower bound avoids a selection over the whole row (``np.partition`` of a million scores per query
    cost more than the matmul): the columns are cut into about ``CHUNKS_PER_RESULT · k`` chunks, and the k-th
    largest chunk maximum is the bound. The k chunks with the largest maxima hold k distinct items that score
    at least that much, so it never exceeds the true k-th score; with many more chunks than k, the top items
    rarely share a chunk, and the bound lets through only a few items more than the k-th score itself.
    NaN scores are ignored (``fmax``); excluded items are -inf.
    """
    num_items = approx.shape[1]
    if num_items <= k:
        return np.full(len(approx), -np.inf)
    width = max(1, num_items // (CHUNKS_PER_RESULT * k))
    maxima = np.fmax.reduceat(approx, np.arange(0, num_items, width), axis=1)
    maxima[np.isnan(maxima)] = -np.inf  # a chunk of NaN scores only
    chunks = maxima.shape[1]
    kth = np.partition(maxima, chunks - k, axis=1)[:, chunks - k].astype(np.float64)
    dim = block.matrix.shape[1]
    unit = np.finfo(approx.dtype).eps + np.finfo(np.float64).eps
    query_norms = np.sqrt(np.einsum("ij,ij->i", queries, queries, dtype=np.float64))
    return kth - 4.0 * dim * unit * query_norms * block.max_norm


def exact_scores(queries: np.ndarray, matrix: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``queries[rows] . matrix[cols]`` in float64, summed component by component in index order.

    The fixed order (no BLAS, no pairwise sum) makes the result independent of batching and chunking.
    """
    chunk = max(1, RESCORE_CELLS // max(1, matrix.shape[1]))
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), chunk):
        stop = start + chunk
        products = queries[rows[start:stop]].astype(np.float64) * matrix[cols[start:stop]].astype(np.float64)
        total = np.zeros(len(products))
        for column in products.T:
            total += column
        out[start:stop] = total
    return out


# -- Arrow <-> numpy ------------------------------------------------------------------------------------------
def _list_column(column) -> pa.ListArray:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def vectors_to_matrix(column, dim: int, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """``(valid, matrix)``: which rows have a vector, and those vectors as a ``(valid rows, dim)`` matrix.

    ``dtype`` defaults to the column's own element type.
    """
    column = _list_column(column)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    lengths = column.value_lengths().fill_null(dim).to_numpy(zero_copy_only=False)
    if np.any(lengths != dim):
        raise ValueError(f"a vector has {lengths[lengths != dim][0]} components where {dim} are expected")
    dtype = dtype or column.type.value_type.to_pandas_dtype()
    values = column.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return valid, values.reshape(-1, dim)


def excluded_pairs(column, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, item ids)`` of the exclusion lists, ``rows`` numbering the valid (vector-bearing) rows."""
    column = _list_column(column)
    lengths = column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    flat = column.flatten()
    keep = np.repeat(valid, lengths) & flat.is_valid().to_numpy(zero_copy_only=False)
    rows = np.repeat(np.cumsum(valid) - 1, lengths)
    ids = flat.fill_null(0).to_numpy(zero_copy_only=False)
    return rows[keep].astype(np.int64), ids[keep].astype(np.int64)


def recommendation_array(valid: np.ndarray, counts: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> pa.Array:
    """The ``recommendations`` column: valid rows get their ``counts`` entries, the others an empty list."""
    per_row = np.zeros(len(valid), dtype=np.int64)
    per_row[valid] = counts
    offsets = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32)
    values = pa.StructArray.from_arrays(
        [pa.array(ids, pa.int64()), pa.array(scores, pa.float64())], names=[ITEM_ID, SCORE]
    )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=to_arrow_type(SCORED_ITEMS))


def _score_queries(table, block: ItemBlock, k: int, batch_size: int) -> pa.Array:
    valid, matrix = vectors_to_matrix(table.column(_QUERY_VECTOR), block.matrix.shape[1])
    excluded_rows, excluded_ids = excluded_pairs(table.column(_EXCLUDED), valid)
    counts, ids, scores = block_top_k(matrix, excluded_rows, excluded_ids, block, k, batch_size)
    return recommendation_array(valid, counts, ids, scores)


# -- path 1: broadcast item matrix ----------------------------------------------------------------------------
def _collect_item_block(item_table: DataFrame, shape: CatalogShape) -> ItemBlock:
    table = item_table.toArrow()
    ids = table.column(ITEM_ID).to_numpy()
    _, matrix = vectors_to_matrix(table.column(_ITEM_VECTOR), shape.dim, shape.dtype)
    return item_block(ids, matrix)


def _broadcast_top_k(query_table, item_table, shape, k, batch_size, output_schema) -> DataFrame:
    # The whole catalog matrix goes to the driver and out to every executor: by design, and only once the count
    # showed it fits in max_broadcast_bytes. Each Python worker deserialises it once and reuses it.
    spark = SparkSession.getActiveSession()
    broadcast = spark.sparkContext.broadcast(_collect_item_block(item_table, shape))

    def score_batches(batches):
        block = broadcast.value
        for batch in batches:
            recommendations = _score_queries(batch, block, k, batch_size)
            yield pa.RecordBatch.from_arrays(
                [batch.column(QUERY_ID), recommendations], names=[QUERY_ID, RECOMMENDATIONS]
            )

    # Scoring costs |catalog| × dim per query, moving a query costs dim: spread the queries over every task slot,
    # whatever partitioning they came with (one parquet file, or a join that adaptive execution coalesced).
    spread = query_table.repartition(spark.sparkContext.defaultParallelism)
    return spread.mapInArrow(score_batches, output_schema)


# -- path 2: block cross-join ---------------------------------------------------------------------------------
def _block_cross_join_top_k(query_table, item_table, shape, k, batch_size, block_bytes, output_schema) -> DataFrame:
    vector_bytes = shape.dim * np.dtype(shape.dtype).itemsize
    num_blocks = max(1, math.ceil(shape.matrix_bytes / block_bytes))
    num_groups = max(1, math.ceil(query_table.count() * vector_bytes / block_bytes))
    items = item_table.withColumn(_BLOCK, F.pmod(F.xxhash64(ITEM_ID), F.lit(num_blocks)))
    items = items.crossJoin(_index_column(_GROUP, num_groups))
    query_rows = query_table.withColumn(_GROUP, F.pmod(F.xxhash64(QUERY_ID), F.lit(num_groups)))
    query_rows = query_rows.crossJoin(_index_column(_BLOCK, num_blocks))
    dim, dtype = shape.dim, shape.dtype

    def score_pair(query_group, item_group):
        ids = item_group.column(ITEM_ID).to_numpy()
        _, matrix = vectors_to_matrix(item_group.column(_ITEM_VECTOR), dim, dtype)
        recommendations = _score_queries(query_group, item_block(ids, matrix), k, batch_size)
        return pa.Table.from_arrays([query_group.column(QUERY_ID), recommendations], names=[QUERY_ID, RECOMMENDATIONS])

    partial = (
        query_rows.groupBy(_GROUP, _BLOCK)
        .cogroup(items.groupBy(_GROUP, _BLOCK))
        .applyInArrow(score_pair, output_schema)
    )
    return merge_partial_top_k(partial, k)


def _index_column(name: str, size: int) -> DataFrame:
    spark = SparkSession.getActiveSession()
    return spark.range(size).select(F.col("id").alias(name))


def merge_partial_top_k(partial: DataFrame, k: int) -> DataFrame:
    """Merge several ``recommendations`` rows per query into the best ``k``, score desc then item id asc."""
    entries = F.flatten(F.collect_list(RECOMMENDATIONS))
    by_rank = F.sort_array(F.transform(entries, lambda e: F.struct((-e[SCORE]).alias("neg"), e[ITEM_ID].alias("id"))))
    best = F.transform(
        F.slice(by_rank, 1, k), lambda e: F.struct(e["id"].alias(ITEM_ID), (-e["neg"]).alias(SCORE))
    )
    return partial.groupBy(QUERY_ID).agg(best.cast(SCORED_ITEMS).alias(RECOMMENDATIONS))
