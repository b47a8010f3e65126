"""Swing (Yang, Zhu, Zhang: "Large Scale Product Graph Construction for Recommendation in E-commerce",
arXiv 2010.05525), with the caps and user weights of Alink / Flink ML's Swing.

``sim(i, j) = Σ_{u<v; u,v ∈ U_i ∩ U_j} w_u·w_v / (alpha + |I_u ∩ I_v|)`` with
``w_u = (user_alpha + |I_u|)^(−user_beta)``. Two users who share ``i`` and ``j`` but little else are strong
evidence that ``i`` and ``j`` belong together; users who share a lot add little.

Caps, as in Flink ML: users with fewer than ``min_items_per_user`` or more than ``max_items_per_user``
distinct items are left out entirely; for an item with more than ``max_users_per_item`` users only a seeded
sample of them (smallest ``xxhash64(seed, item, user)``) forms the user pairs of that item's row. ``|I_u|``
and ``I_u ∩ I_v`` are always the users' whole distinct item sets: the caps choose which users and which user
pairs take part, they never truncate a user's items, so counting before or after them gives the same
numbers. With the per-item sample active, ``sim(i, j)`` sums over pairs of ``i``'s sample and need not equal
``sim(j, i)``.

Plan (the engine in ``cooccurrence.py``): one row per kept user with its sorted items and, as anchors, the
items whose sample it belongs to; users are routed to the item blocks of their anchors, so a task holds,
for each of its items, every sampled user with the whole item list. Per item ``i`` with sampled users
``S`` (sorted by id) and ``B``, their rows of the user × item matrix restricted to items at least two of
them share:

    M = B Bᵀ                              (|I_u ∩ I_v|, exact in floating point)
    C = w wᵀ / (alpha + M), zero diagonal (the weight of each user pair)
    sim(i, ·) = ½ · colsum(B ∘ (C B))     (Σ over ordered pairs u ≠ v, halved)

with dense BLAS products when ``B`` is dense enough and scipy sparse ones otherwise. Work per item is about
``|S|² × (items shared)``; the caps bound both it and the memory of one item. Only the top ``k_neighbours``
per item leave the task: no user pair and no item pair is ever shuffled.
"""

from __future__ import annotations

import itertools
from typing import ClassVar, Iterator

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from pyspark.ml.param import Params
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from ..columns import ITEM_ID, USER_ID
from ..search import Domain, FloatRange
from ..validation import check, integer, number
from .base import param
from .cooccurrence import (
    ANCHORS,
    ITEMS,
    OUTPUT_ROWS_PER_BATCH,
    Kernel,
    UserBlock,
    all_positions,
    distinct_user_items,
    item_block_count,
    neighbour_batches,
    read_user_block,
    require_interactions,
    sample_key,
    stacked_rows,
    top_k,
    user_events,
    whole_partition,
)
from .item_to_item import CooccurrenceEstimator, ItemToItemModel

SAMPLED = "sampled"
ROUTED_ENTRIES_PER_BLOCK = 5e7
DENSE_MAX_CELLS = 1 << 24
DENSE_MIN_DENSITY = 1 / 32


class SwingParams(Params):
    alpha = param("alpha", "smoothing added to |I_u ∩ I_v| in the user-pair weight", number(at_least=0))
    user_alpha = param("user_alpha", "added to |I_u| in the user weight (user_alpha + |I_u|)^-user_beta", number(at_least=0))
    user_beta = param("user_beta", "exponent of the user weight (user_alpha + |I_u|)^-user_beta", number(at_least=0))
    max_users_per_item = param(
        "max_users_per_item", "items with more users use a seeded random sample of this many (None: all)", integer(at_least=1)
    )
    min_items_per_user = param("min_items_per_user", "users with fewer distinct items are left out", integer(at_least=1))
    max_items_per_user = param(
        "max_items_per_user", "users with more distinct items are left out (None: no limit)", integer(at_least=1)
    )
    k_neighbours = param("k_neighbours", "neighbours kept per item", integer(at_least=1))
    seed = param("seed", "seed of the max_users_per_item sample", integer())

    SEARCH_SPACE: ClassVar[dict[str, Domain]] = {
        "alpha": FloatRange(0.0, 10.0),
        "user_alpha": FloatRange(0.0, 50.0),
        "user_beta": FloatRange(0.0, 1.0),
    }
    """What ``spark-retrieval tune`` searches (``spark_retrieval.search``); the defaults lie inside."""

    def __init__(self, *args):
        super().__init__(*args)
        # alpha, user_alpha, user_beta: chosen on validation (see the comment above MODELS in models/registry.py).
        self._setDefault(
            alpha=8.150455103169143,
            user_alpha=20.406969422608224,
            user_beta=0.9381634476049462,
            max_users_per_item=1000,
            min_items_per_user=1,
            max_items_per_user=1000,
            k_neighbours=100,
            seed=0,
        )


class SwingModel(ItemToItemModel, SwingParams):
    """Swing neighbour table ``item_id, neighbours``; ``recommend`` answers from each query's ``last_item``."""


class Swing(CooccurrenceEstimator, SwingParams):
    """Swing item-item similarity (see the module docstring for the formula and the plan);
    keyword-only parameters.

    Parameters:
        alpha: smoothing in the user-pair weight ``1 / (alpha + |I_u ∩ I_v|)``; ``>= 0`` (0 is safe: a
            contributing pair shares at least two items).
        user_alpha, user_beta: the user weight ``w_u = (user_alpha + |I_u|)^(−user_beta)``, which damps very
            active users; both ``>= 0``. ``user_beta = 0`` turns the weight off.
        max_users_per_item: an item with more users uses a seeded random sample of this many to form its user
            pairs (``None``: all users). It bounds the work per item, ``O(sample² × items)``.
        min_items_per_user, max_items_per_user: users whose number of distinct items is outside this range are
            left out of every sum (``max_items_per_user=None``: no upper limit).
        k_neighbours: neighbours kept per item, by score descending then smaller item id.
        seed: seed of the per-item sample; the same seed gives the same neighbour table.

    ``|I_u|`` is the user's number of distinct items in train: the same before and after the caps.
    """

    model_class = SwingModel

    def validate_params(self) -> None:
        low, high = self.get("min_items_per_user"), self.get("max_items_per_user")
        check(high is None or high >= low, f"Swing: max_items_per_user must be None or >= min_items_per_user ({low}), got {high}")

    def _user_rows(self, train: DataFrame) -> DataFrame:
        return swing_user_rows(
            train,
            self.get("min_items_per_user"),
            self.get("max_items_per_user"),
            self.get("max_users_per_item"),
            self.get("seed"),
        )

    def _plan(self, rows: DataFrame) -> tuple[int, Kernel]:
        stats = rows.agg(
            F.count(F.lit(1)).alias("users"),
            F.sum(F.size(ANCHORS).cast("double") * F.size(ITEMS)).alias("routed"),
        ).first()
        require_interactions(stats["users"], "user within min_items_per_user..max_items_per_user items")
        num_blocks = item_block_count(rows.sparkSession, stats["routed"], ROUTED_ENTRIES_PER_BLOCK)
        kernel = swing_kernel(self.get("k_neighbours"), self.get("alpha"), self.get("user_alpha"), self.get("user_beta"))
        return num_blocks, kernel


# -- Spark side ------------------------------------------------------------------------------------
def swing_user_rows(
    train: DataFrame, min_items: int, max_items: int | None, max_users_per_item: int | None, seed: int
) -> DataFrame:
    """``user_id, items, anchors`` for users within the item range; anchors: the items whose sample holds the user."""
    activity = F.size(ITEMS)
    in_range = activity >= min_items if max_items is None else activity.between(min_items, max_items)
    user_items = distinct_user_items(train).where(in_range)
    if max_users_per_item is None:
        return user_items.withColumn(ANCHORS, all_positions())
    order = Window.partitionBy(ITEM_ID).orderBy(sample_key(seed, F.col(ITEM_ID), F.col(USER_ID)), USER_ID)
    flagged = user_events(user_items).withColumn(SAMPLED, F.row_number().over(order) <= max_users_per_item)
    entries = flagged.groupBy(USER_ID).agg(F.array_sort(F.collect_list(F.struct(ITEM_ID, SAMPLED))).alias("entries"))
    sampled = F.col("entries")[SAMPLED]
    return entries.select(USER_ID, F.col("entries")[ITEM_ID].alias(ITEMS), sampled.alias(SAMPLED)).select(
        USER_ID, ITEMS, F.filter(all_positions(), lambda position: F.col(SAMPLED)[position]).alias(ANCHORS)
    )


# -- in the task of one item block -----------------------------------------------------------------
def swing_kernel(k: int, alpha: float, user_alpha: float, user_beta: float) -> Kernel:
    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        # Every sampled user of an item must be at hand at once, so the partition is read whole; the
        # block count keeps it near ROUTED_ENTRIES_PER_BLOCK list entries.
        batch = whole_partition(batches)
        if batch is None:
            return
        block = read_user_block(batch)
        weights = (user_alpha + np.diff(block.items.indptr)) ** -user_beta
        for chunk in chunks(swing_rows(block, weights, alpha), OUTPUT_ROWS_PER_BATCH):
            row_ids, columns, scores = (list(part) for part in zip(*chunk))
            yield from neighbour_batches(top_k(stacked_rows(row_ids, columns, scores, block.item_ids), k))

    return kernel


def swing_rows(block: UserBlock, weights: np.ndarray, alpha: float) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(item, columns of its other items, scores)`` for each anchor item with at least two sampled users."""
    users_of_anchor = block.anchors.tocsc()
    own_columns = np.searchsorted(block.item_ids, block.anchor_ids)
    for anchor, item in enumerate(block.anchor_ids):
        users = users_of_anchor.indices[users_of_anchor.indptr[anchor] : users_of_anchor.indptr[anchor + 1]]
        if len(users) >= 2:
            shared, scores = swing_scores(block.items[users], weights[users], alpha)
            others = shared != own_columns[anchor]
            yield int(item), shared[others], scores[others]


def chunks(values: Iterator, size: int) -> Iterator[list]:
    while chunk := list(itertools.islice(values, size)):
        yield chunk


def swing_scores(lists: sp.csr_matrix, weights: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Columns shared by at least two of the users (rows of ``lists``), and the Swing sum over user pairs for each."""
    shared = np.flatnonzero(np.bincount(lists.indices, minlength=lists.shape[1]) >= 2)
    common = lists[:, shared]
    if is_dense_enough(common):
        common = common.toarray()
        pair_weights = user_pair_weights(overlap_counts(common), weights, alpha)
        return shared, 0.5 * np.einsum("uj,uj->j", common, pair_weights @ common)
    pair_weights = user_pair_weights((common @ common.T).toarray(), weights, alpha)
    spread = (common.T.tocsr() @ pair_weights).T
    return shared, 0.5 * np.asarray(common.multiply(spread).sum(axis=0)).ravel()


def overlap_counts(common: np.ndarray) -> np.ndarray:
    """``common @ common.T`` for a dense 0/1 matrix, in float32 BLAS (about twice as fast as float64): exact,
    because every product and partial sum is a whole number below 2^24 while a row has fewer entries."""
    if common.shape[1] >= 1 << 24:
        return common @ common.T
    single = common.astype(np.float32)
    return (single @ single.T).astype(np.float64)


def user_pair_weights(overlaps: np.ndarray, weights: np.ndarray, alpha: float) -> np.ndarray:
    pair_weights = np.outer(weights, weights) / (alpha + overlaps)
    np.fill_diagonal(pair_weights, 0.0)
    return pair_weights


def is_dense_enough(matrix: sp.csr_matrix) -> bool:
    cells = matrix.shape[0] * matrix.shape[1]
    return 0 < cells <= DENSE_MAX_CELLS and matrix.nnz >= DENSE_MIN_DENSITY * cells
