"""The blocked co-occurrence engine shared by Item CF and Swing: pair sums never leave the task that makes them.

Both models score an item ``i`` against every item ``j`` that shares a user with it, by a sum over those
users (Item CF) or over pairs of them (Swing). The naive plan self-joins each user's items into one row
per pair, ``Σ_u |I_u|²`` rows (6–7·10⁸ on a MovieLens-1M-sized set) before any aggregation.

Plan: **route users to item blocks, aggregate and rank inside the block.**

1. One row per user: the user's distinct items, sorted (``collect_set`` in one shuffle by user), and
   ``anchors``: the positions of the items whose neighbour rows this user contributes to (all of them for
   Item CF; for Swing, the items whose seeded user sample holds the user).
2. Items fall into ``B`` blocks, ``block(i) = pmod(hash(i), B)``. Each user row is copied once to every
   block that holds one of its anchors (at most ``min(B, |I_u|)`` copies), keeping only that block's anchors.
   Spark's hash partitioning sends a row to ``pmod(hash(key), B)``, so keying the repartition on one of the
   row's anchor items puts every copy for block ``b`` into partition ``b``; each task checks this.
3. A partition then holds *every* user of its items, so the rows of the item-item matrix for its items are
   complete there: the model's kernel (``mapInArrow``) aggregates them with numpy/scipy from Arrow batches
   of at most ``spark.sql.execution.arrow.maxRecordsPerBatch`` users and keeps the top ``k`` per item.
   Only those ``k`` neighbours per item leave the task. Nothing is broadcast but Item CF's per-item norms.

Why not sum partial products of user blocks across a pair shuffle? On MovieLens-1M-shaped data the
co-occurrence matrix is dense (all 13.7M pairs of 3,706 items co-occur), so every user block's ``XᵀX`` is
the whole matrix and the shuffle moves ``#blocks × 13.7M`` rows. Routing moves at most ``B`` copies of each
user's list (``B × 1M`` entries there), and the pair sums finish where they are computed. ``B`` is the
number of tasks that run at once (each block re-reads its users' lists, so more blocks than cores only add
copies), raised when the model's size estimate needs more blocks to bound a task's memory
(``item_block_count``).

Determinism: within a partition users arrive sorted by id in Arrow batches of a fixed size, so every sum
runs in the same order on every run; seeded samples rank by ``xxhash64(seed, owner, member)``, which does not
depend on partitioning. Ties in a neighbour list go to the smaller item id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from pyspark import StorageLevel, TaskContext
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..columns import ITEM_ID, NEIGHBOURS, SCORE, SCORED_ITEMS, USER_ID
from ..errors import EmptyDataError
from ..session import task_slots

ITEMS = "items"
ANCHORS = "anchors"
BLOCK = "block"
ACTIVITY = "activity"

NEIGHBOUR_SCHEMA = T.StructType([T.StructField(ITEM_ID, T.LongType()), T.StructField(NEIGHBOURS, SCORED_ITEMS)])
NEIGHBOUR_ARROW_TYPE = pa.list_(pa.struct([pa.field(ITEM_ID, pa.int64()), pa.field(SCORE, pa.float64())]))
OUTPUT_ROWS_PER_BATCH = 4096

Kernel = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


# -- Spark side ------------------------------------------------------------------------------------
def distinct_user_items(train: DataFrame) -> DataFrame:
    """``user_id, items``: each user's distinct non-null items, ascending (one shuffle by user)."""
    pairs = train.select(F.col(USER_ID).cast("long").alias(USER_ID), F.col(ITEM_ID).cast("long").alias(ITEM_ID))
    pairs = pairs.where(F.col(USER_ID).isNotNull() & F.col(ITEM_ID).isNotNull())
    return pairs.groupBy(USER_ID).agg(F.array_sort(F.collect_set(ITEM_ID)).alias(ITEMS))


def sample_key(seed: int, owner: Column, member: Column) -> Column:
    """The rank key of seeded samples: the same for a given seed whatever the partitioning."""
    return F.xxhash64(F.lit(seed), owner, member)


def seeded_sample(items: Column, owner: Column, size: int, seed: int) -> Column:
    """At most ``size`` of the array ``items``: those with the smallest ``sample_key``, re-sorted by id."""
    keyed = F.transform(items, lambda item: F.struct(sample_key(seed, owner, item).alias("key"), item.alias("item")))
    return F.array_sort(F.transform(F.slice(F.array_sort(keyed), 1, size), lambda entry: entry["item"]))


def user_events(user_items: DataFrame) -> DataFrame:
    """``user_id, item_id, activity`` (the user's number of items), one row per distinct pair."""
    return user_items.select(USER_ID, F.explode(ITEMS).alias(ITEM_ID), F.size(ITEMS).alias(ACTIVITY))


def all_positions() -> Column:
    """Every position of ``items``: each of the user's items is an anchor."""
    return F.sequence(F.lit(0), F.size(ITEMS) - 1)


def item_block(item: Column, num_blocks: int) -> Column:
    # F.hash is the Murmur3 hash (seed 42) that Spark's hash partitioning uses, so a row keyed by an item
    # of block b lands in partition b.
    return F.pmod(F.hash(item), F.lit(num_blocks))


def item_block_count(spark: SparkSession, size_estimate: float, size_per_block: float) -> int:
    """One block per task slot (each block re-reads the lists of its users, so fewer is cheaper), or more
    when ``size_estimate / size_per_block`` asks for it."""
    return max(1, task_slots(spark), math.ceil(size_estimate / size_per_block))




def route_to_item_blocks(user_rows: DataFrame, num_blocks: int) -> DataFrame:
    """Copy each user row (``user_id, items, anchors, …``) to the partition of every block of its anchors.

    A copy keeps only the anchors of its block (``block`` column). Within a partition rows are sorted by user.
    """
    items = F.col(ITEMS)

    def block_of(position: Column) -> Column:
        return item_block(items[position], num_blocks)

    copies = user_rows.withColumn(BLOCK, F.explode(F.array_distinct(F.transform(ANCHORS, block_of))))
    copies = copies.withColumn(ANCHORS, F.filter(ANCHORS, lambda position: block_of(position) == F.col(BLOCK)))
    return copies.repartition(num_blocks, items[F.col(ANCHORS)[0]]).sortWithinPartitions(USER_ID)


def map_item_blocks(routed: DataFrame, kernel: Kernel) -> DataFrame:
    """Run ``kernel`` on each partition of ``routed``; it yields ``item_id, neighbours`` Arrow batches."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from kernel(checked_block(batches, TaskContext.get().partitionId()))

    return routed.mapInArrow(run, NEIGHBOUR_SCHEMA)


def checked_block(batches: Iterable[pa.RecordBatch], partition: int) -> Iterator[pa.RecordBatch]:
    """Pass ``batches`` through, failing loudly if a row of another item block reached this partition."""
    for batch in batches:
        blocks = batch.column(BLOCK).to_numpy(zero_copy_only=False)
        if len(blocks) and not np.all(blocks == partition):
            raise RuntimeError(
                f"item block {int(blocks[blocks != partition][0])} was routed to partition {partition}: "
                "Spark's hash partitioning no longer matches F.hash"
            )
        yield batch


def materialised(table: DataFrame) -> DataFrame:
    """Persist ``table`` and compute it now, so the inputs cached for building it can be released."""
    table = table.persist(StorageLevel.MEMORY_AND_DISK)
    table.count()
    return table


def require_interactions(count: int, what: str) -> None:
    if count == 0:
        raise EmptyDataError(f"train has no {what}: nothing to fit")


# -- numpy side: a batch of users as sparse matrices -----------------------------------------------
@dataclass(frozen=True)
class UserBlock:
    """Routed users as binary sparse matrices over the batch's own columns (its distinct items, ascending).

    ``items``: users × columns, each user's whole list; ``anchors``: users × anchor columns, the user's anchors.
    """

    item_ids: np.ndarray
    anchor_ids: np.ndarray
    items: sp.csr_matrix
    anchors: sp.csr_matrix


def list_column(batch: pa.RecordBatch, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Row offsets (from 0) and flattened values of an Arrow list column."""
    column = batch.column(name)
    offsets = column.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    return offsets - offsets[0], column.flatten().to_numpy(zero_copy_only=False)


def read_user_block(batch: pa.RecordBatch) -> UserBlock:
    item_offsets, item_ids = list_column(batch, ITEMS)
    anchor_offsets, anchor_positions = list_column(batch, ANCHORS)
    columns, column_of_entry = np.unique(item_ids, return_inverse=True)
    anchor_entries = anchor_positions.astype(np.int64) + np.repeat(item_offsets[:-1], np.diff(anchor_offsets))
    anchor_columns, anchor_column_of_entry = np.unique(column_of_entry[anchor_entries], return_inverse=True)
    return UserBlock(
        item_ids=columns,
        anchor_ids=columns[anchor_columns],
        items=sp.csr_matrix(
            (np.ones(len(item_ids)), column_of_entry, item_offsets), shape=(batch.num_rows, len(columns))
        ),
        anchors=sp.csr_matrix(
            (np.ones(len(anchor_entries)), anchor_column_of_entry, anchor_offsets),
            shape=(batch.num_rows, len(anchor_columns)),
        ),
    )


def whole_partition(batches: Iterable[pa.RecordBatch]) -> pa.RecordBatch | None:
    """All batches of a partition as one (``None`` when it is empty)."""
    batches = [batch for batch in batches if batch.num_rows]
    if not batches:
        return None
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


# -- numpy side: labelled sparse rows and their running sum ----------------------------------------
@dataclass(frozen=True)
class LabelledRows:
    """Sparse matrices of one shape whose rows and columns are item ids (ascending), e.g. sums and counts."""

    row_ids: np.ndarray
    col_ids: np.ndarray
    matrices: tuple[sp.csr_matrix, ...]

    @property
    def nnz(self) -> int:
        return self.matrices[0].nnz


def relabelled(part: LabelledRows, row_ids: np.ndarray, col_ids: np.ndarray) -> tuple[sp.csr_matrix, ...]:
    if np.array_equal(part.row_ids, row_ids) and np.array_equal(part.col_ids, col_ids):
        return part.matrices
    rows = np.searchsorted(row_ids, part.row_ids)
    cols = np.searchsorted(col_ids, part.col_ids)
    shape = (len(row_ids), len(col_ids))
    moved = []
    for matrix in part.matrices:
        coo = matrix.tocoo()
        moved.append(sp.csr_matrix((coo.data, (rows[coo.row], cols[coo.col])), shape=shape))
    return tuple(moved)


def summed(parts: list[LabelledRows]) -> LabelledRows:
    """The sum of ``parts`` (in list order, so the result does not depend on anything else)."""
    if len(parts) == 1:
        return parts[0]
    row_ids = np.unique(np.concatenate([p.row_ids for p in parts]))
    col_ids = np.unique(np.concatenate([p.col_ids for p in parts]))
    totals = None
    for part in parts:
        moved = relabelled(part, row_ids, col_ids)
        totals = moved if totals is None else tuple(t + m for t, m in zip(totals, moved))
    return LabelledRows(row_ids, col_ids, tuple(canonical(m) for m in totals))


def canonical(matrix) -> sp.csr_matrix:
    """CSR with sorted indices and summed duplicates: matrices with the same pairs then line up entry by entry."""
    matrix = matrix.tocsr()
    matrix.sum_duplicates()
    return matrix


class RunningSum:
    """Sums ``LabelledRows`` one batch at a time; pending parts are folded in once they outweigh the total,
    which keeps the work ``O(n log n)`` however many batches come."""

    def __init__(self):
        self._total: LabelledRows | None = None
        self._pending: list[LabelledRows] = []

    def add(self, part: LabelledRows) -> None:
        self._pending.append(part)
        if sum(p.nnz for p in self._pending) >= (self._total.nnz if self._total else 0):
            self._fold()

    def total(self) -> LabelledRows | None:
        self._fold()
        return self._total

    def _fold(self) -> None:
        if self._pending:
            self._total = summed(([self._total] if self._total else []) + self._pending)
            self._pending = []


# -- numpy side: scored rows, top-k and the output batches ------------------------------------------
@dataclass(frozen=True)
class ScoredRows:
    """Candidate neighbours in CSR layout: row ``r`` (item ``row_ids[r]``) owns entries ``indptr[r]:indptr[r+1]``,
    each a column (item ``col_ids[column]``; ids ascend with the column) and a score. Only scores > 0 count."""

    row_ids: np.ndarray
    indptr: np.ndarray
    columns: np.ndarray
    scores: np.ndarray
    col_ids: np.ndarray

    def entry_rows(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.row_ids)), np.diff(self.indptr))


def scored_rows(labelled: LabelledRows, scores: np.ndarray | None = None) -> ScoredRows:
    """The first matrix of ``labelled`` as scored rows (with ``scores`` in place of its values if given)."""
    matrix = labelled.matrices[0]
    values = matrix.data if scores is None else scores
    return ScoredRows(labelled.row_ids, matrix.indptr.astype(np.int64), matrix.indices, values, labelled.col_ids)


def stacked_rows(row_ids: list[int], columns: list[np.ndarray], scores: list[np.ndarray], col_ids: np.ndarray) -> ScoredRows:
    lengths = np.array([len(c) for c in columns], dtype=np.int64)
    return ScoredRows(
        np.asarray(row_ids, dtype=np.int64),
        np.concatenate([[0], np.cumsum(lengths)]),
        np.concatenate(columns) if columns else np.empty(0, np.int64),
        np.concatenate(scores) if scores else np.empty(0, np.float64),
        col_ids,
    )


def kept_entries(rows: ScoredRows, keep: np.ndarray) -> ScoredRows:
    per_row = np.bincount(rows.entry_rows()[keep], minlength=len(rows.row_ids))
    return ScoredRows(
        rows.row_ids, np.concatenate([[0], np.cumsum(per_row)]), rows.columns[keep], rows.scores[keep], rows.col_ids
    )


def top_k(rows: ScoredRows, k: int) -> ScoredRows:
    """The ``k`` best entries with a positive score in each row, by score descending then id ascending."""
    positive = rows.scores > 0
    lengths = np.diff(rows.indptr)
    keep = positive & np.repeat(lengths <= k, lengths)
    for row in np.flatnonzero(lengths > k):
        start, end = rows.indptr[row], rows.indptr[row + 1]
        scores = rows.scores[start:end]
        kth_best = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep[start:end] = positive[start:end] & (scores >= kth_best)  # ties at the k-th score stay candidates
    candidates = kept_entries(rows, keep)
    entry_rows = candidates.entry_rows()
    order = np.lexsort((candidates.columns, -candidates.scores, entry_rows))
    rank = np.arange(len(order)) - candidates.indptr[entry_rows]
    ordered = ScoredRows(
        candidates.row_ids, candidates.indptr, candidates.columns[order], candidates.scores[order], candidates.col_ids
    )
    return kept_entries(ordered, rank < k)


def neighbour_batches(rows: ScoredRows, max_rows: int = OUTPUT_ROWS_PER_BATCH) -> Iterator[pa.RecordBatch]:
    """``item_id, neighbours`` Arrow batches of at most ``max_rows`` items; items without neighbours are left out."""
    lengths = np.diff(rows.indptr)
    row_ids = rows.row_ids[lengths > 0]
    indptr = np.concatenate([[0], np.cumsum(lengths[lengths > 0])])
    for start in range(0, len(row_ids), max_rows):
        end = min(start + max_rows, len(row_ids))
        first, last = indptr[start], indptr[end]
        entries = pa.StructArray.from_arrays(
            [
                pa.array(rows.col_ids[rows.columns[first:last]], pa.int64()),
                pa.array(rows.scores[first:last], pa.float64()),
            ],
            fields=list(NEIGHBOUR_ARROW_TYPE.value_type),
        )
        offsets = pa.array((indptr[start : end + 1] - first).astype(np.int32))
        yield pa.RecordBatch.from_arrays(
            [pa.array(row_ids[start:end], pa.int64()), pa.ListArray.from_arrays(offsets, entries)],
            names=[ITEM_ID, NEIGHBOURS],
        )

