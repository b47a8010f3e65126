"""Item CF: item-item cosine similarity with user-activity weighting, as one Spark job.

``sim(i, j) = Σ_{u ∈ U_i ∩ U_j} w_u² / (‖i‖·‖j‖ + shrinkage)`` with ``w_u² = 1/|I_u|`` and
``‖i‖ = sqrt(Σ_{u ∈ U_i} w_u²)``; repeated (user, item) events count once. ``shrinkage`` (default 0: plain
cosine) pulls down pairs of rarely seen items, whose norms are small. Each item keeps its ``k_neighbours`` best other items (score
descending, then smaller item id); pairs shared by fewer than ``min_cooccurrence`` users are dropped.

Plan (the engine in ``cooccurrence.py``; why it beats a self-join or a pair shuffle is explained there):

1. ``user_id, items``: distinct items per user in one shuffle by user; with ``max_items_per_user``, a user
   with more items keeps the seeded sample of that many with the smallest ``xxhash64(seed, user, item)``.
2. ``‖i‖²`` per item: a partial aggregation of ``1/|I_u|`` in fixed point (two longs), so the sums are
   exact and the same whatever order the partial sums arrive in. It is one number per item, a vocabulary, so it is collected and broadcast
   (the only broadcast; interaction data never goes through the driver).
3. Users are routed to the item blocks of their items. In the task of block ``b`` every Arrow batch of
   users adds ``A_bᵀ diag(w²) B`` (``b``'s items × all items, a scipy sparse product of the batch's binary
   user × item matrices) to a running sum, so the rows of ``b``'s items are complete when the partition
   ends. They are divided by ``‖i‖·‖j‖`` (with ``shrinkage = 0`` each term is scaled by ``1/‖i‖`` and ``1/‖j‖``
   before it is added; with ``shrinkage > 0`` the raw sums are divided by ``‖i‖·‖j‖ + shrinkage`` at the end), self pairs and rare pairs dropped and the top ``k`` kept; only
   those leave the task.

Memory per task: one Arrow batch of users plus the block's rows, at most (items of ``b``) × catalogue
entries; the block count grows with ``min(#items², Σ_u |I_u|²)`` so that stays near
``PAIRS_PER_ITEM_BLOCK``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterator

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from pyspark import Broadcast
from pyspark.ml.param import Params
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ..columns import ITEM_ID, USER_ID
from ..search import Domain, FloatRange, IntRange
from ..validation import integer, number
from .base import param
from .cooccurrence import (
    ACTIVITY,
    ANCHORS,
    ITEMS,
    Kernel,
    LabelledRows,
    RunningSum,
    ScoredRows,
    UserBlock,
    all_positions,
    canonical,
    distinct_user_items,
    item_block_count,
    neighbour_batches,
    read_user_block,
    require_interactions,
    scored_rows,
    seeded_sample,
    top_k,
    user_events,
)
from .item_to_item import CooccurrenceEstimator, ItemToItemModel

PAIRS_PER_ITEM_BLOCK = 5e7
WHOLE_SCALE = 1 << 32
FRACTION_SCALE = 1 << 30


class ItemCFParams(Params):
    k_neighbours = param("k_neighbours", "neighbours kept per item", integer(at_least=1))
    max_items_per_user = param(
        "max_items_per_user",
        "users with more distinct items keep a seeded random sample of this many (None: all)",
        integer(at_least=1),
    )
    min_cooccurrence = param("min_cooccurrence", "pairs shared by fewer users than this are dropped", integer(at_least=1))
    shrinkage = param(
        "shrinkage", "added to the cosine's denominator: sim = Σ w² / (‖i‖·‖j‖ + shrinkage); 0 is plain cosine", number(at_least=0)
    )
    seed = param("seed", "seed of the max_items_per_user sample", integer())

    SEARCH_SPACE: ClassVar[dict[str, Domain]] = {
        # Recommendations are the top K of last_item's neighbours, so only values below K change the lists.
        "k_neighbours": IntRange(10, 400, log=True),
        # ‖i‖·‖j‖ is about 1 for items with ~|I_u| users; 5 is a strong pull towards popular pairs.
        "shrinkage": FloatRange(0.0, 5.0),
        "min_cooccurrence": IntRange(1, 5),
    }
    """What ``spark-retrieval tune`` searches (``spark_retrieval.search``); the defaults lie inside."""

    def __init__(self, *args):
        super().__init__(*args)
        # shrinkage, min_cooccurrence: chosen on validation (see the comment above MODELS in models/registry.py).
        # That trial had 38 neighbours; 100 ranks the same top 20 and keeps a few hundred candidates possible.
        self._setDefault(k_neighbours=100, max_items_per_user=None, min_cooccurrence=1, shrinkage=0.45357351425413195, seed=0)


class ItemCFModel(ItemToItemModel, ItemCFParams):
    """Item CF neighbour table ``item_id, neighbours``; ``recommend`` answers from each query's ``last_item``."""


class ItemCF(CooccurrenceEstimator, ItemCFParams):
    """Item CF with cosine similarity and ``1/|I_u|`` user-activity weighting (keyword-only parameters).

    ``k_neighbours``: neighbours kept per item. ``shrinkage``: added to the cosine's denominator (0: plain
    cosine). ``max_items_per_user``: off by default; when set, a user with
    more distinct items keeps a seeded random sample of that many, and ``|I_u|`` in the weight is the sample's
    size. ``min_cooccurrence``: pairs shared by fewer users (after sampling) are dropped. ``seed``: the
    sample's seed; the same seed gives the same neighbour table whatever the partitioning.
    """

    model_class = ItemCFModel

    def _user_rows(self, train: DataFrame) -> DataFrame:
        user_items = capped_user_items(train, self.get("max_items_per_user"), self.get("seed"))
        return user_items.withColumn(ANCHORS, all_positions())

    def _plan(self, rows: DataFrame) -> tuple[int, Kernel]:
        spark = rows.sparkSession
        norms = collected_item_norms(rows)
        require_interactions(norms.events, "(user_id, item_id) pair without nulls")
        num_blocks = item_block_count(spark, min(len(norms.item_ids) ** 2, norms.pairs), PAIRS_PER_ITEM_BLOCK)
        # The item norms are a vocabulary (two numbers per item), small enough to broadcast.
        norms_broadcast = spark.sparkContext.broadcast(norms.as_arrays())
        kernel = item_cf_kernel(
            self.get("k_neighbours"), self.get("min_cooccurrence"), norms_broadcast, shrinkage=self.get("shrinkage")
        )
        return num_blocks, kernel


# -- Spark side ------------------------------------------------------------------------------------
def capped_user_items(train: DataFrame, max_items_per_user: int | None, seed: int) -> DataFrame:
    user_items = distinct_user_items(train)
    if max_items_per_user is None:
        return user_items
    return user_items.withColumn(ITEMS, seeded_sample(F.col(ITEMS), F.col(USER_ID), max_items_per_user, seed))


@dataclass(frozen=True)
class ItemNorms:
    """``‖i‖²`` per item (ids ascending), and the totals that size the job."""

    item_ids: np.ndarray
    norms_squared: np.ndarray
    events: int
    pairs: int

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.item_ids, self.norms_squared


def collected_item_norms(user_items: DataFrame) -> ItemNorms:
    """``‖i‖² = Σ_{u ∈ U_i} 1/|I_u|``, summed exactly (fixed point) so no order of partial sums can change it."""
    whole, fraction = inverse_in_fixed_point(ACTIVITY)
    per_item = user_events(user_items).groupBy(ITEM_ID).agg(
        F.sum(whole).alias("whole"),
        F.sum(fraction).alias("fraction"),
        F.count(F.lit(1)).alias("events"),
        F.sum(ACTIVITY).alias("pairs"),
    )
    frame = per_item.toPandas().sort_values(ITEM_ID)
    whole, fraction = frame["whole"].to_numpy(np.float64), frame["fraction"].to_numpy(np.float64)
    return ItemNorms(
        item_ids=frame[ITEM_ID].to_numpy(np.int64),
        norms_squared=(whole + fraction / FRACTION_SCALE) / WHOLE_SCALE,
        events=int(frame["events"].sum()),
        pairs=int(frame["pairs"].sum()),
    )


def inverse_in_fixed_point(count: str) -> tuple[Column, Column]:
    """``1/count = (whole + fraction / 2^30) / 2^32`` to within 2^-62, as two longs whose sums are exact."""
    whole = F.expr(f"{WHOLE_SCALE} div {count}")
    fraction = F.expr(f"(({WHOLE_SCALE} % {count}) * {FRACTION_SCALE}) div {count}")
    return whole, fraction


# -- in the task of one item block -----------------------------------------------------------------
def item_cf_kernel(k: int, min_cooccurrence: int, norms: Broadcast, shrinkage: float = 0.0) -> Kernel:
    with_counts = min_cooccurrence > 1

    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        norm_ids, norms_squared = norms.value
        running = RunningSum()
        if shrinkage == 0:  # plain cosine: the terms are scaled before they are summed (unchanged since 0.1)
            inverse_norms = 1.0 / np.sqrt(norms_squared)
            for batch in batches:
                running.add(cosine_terms(read_user_block(batch), norm_ids, inverse_norms, with_counts))
        else:
            for batch in batches:
                running.add(weighted_cooccurrence_terms(read_user_block(batch), with_counts))
        total = running.total()
        if total is not None:
            if shrinkage != 0:
                total = shrunk_cosine(total, norm_ids, np.sqrt(norms_squared), shrinkage)
            yield from neighbour_batches(top_k(neighbour_candidates(total, min_cooccurrence), k))

    return kernel


def cosine_terms(block: UserBlock, norm_ids: np.ndarray, inverse_norms: np.ndarray, with_counts: bool) -> LabelledRows:
    """The batch's share of ``sim(i, j) = Σ_u (w_u² / ‖i‖)·(1 / ‖j‖)`` for its anchor items ``i`` and all items
    ``j``, plus the user counts of each pair if asked (then with sorted indices, so both line up)."""
    anchor_scale = sp.diags(inverse_norms[np.searchsorted(norm_ids, block.anchor_ids)])
    item_scale = sp.diags(inverse_norms[np.searchsorted(norm_ids, block.item_ids)])
    activity_scale = sp.diags(1.0 / np.diff(block.items.indptr))
    anchors = (activity_scale @ block.anchors @ anchor_scale).T.tocsr()
    sums = anchors @ (block.items @ item_scale)
    if not with_counts:
        return LabelledRows(block.anchor_ids, block.item_ids, (sums.tocsr(),))
    counts = block.anchors.T.tocsr() @ block.items
    return LabelledRows(block.anchor_ids, block.item_ids, (canonical(sums), canonical(counts)))


def weighted_cooccurrence_terms(block: UserBlock, with_counts: bool) -> LabelledRows:
    """The batch's share of ``Σ_u w_u²`` for its anchor items ``i`` and all items ``j`` (no norms), plus the user
    counts of each pair if asked (then with sorted indices, so both line up)."""
    activity_scale = sp.diags(1.0 / np.diff(block.items.indptr))
    sums = (activity_scale @ block.anchors).T.tocsr() @ block.items
    if not with_counts:
        return LabelledRows(block.anchor_ids, block.item_ids, (sums.tocsr(),))
    counts = block.anchors.T.tocsr() @ block.items
    return LabelledRows(block.anchor_ids, block.item_ids, (canonical(sums), canonical(counts)))


def shrunk_cosine(total: LabelledRows, norm_ids: np.ndarray, norms: np.ndarray, shrinkage: float) -> LabelledRows:
    """``total`` with its sums ``Σ_u w_u²`` divided by ``‖i‖·‖j‖ + shrinkage`` (same sparsity, counts kept)."""
    sums = total.matrices[0].tocsr()
    row_norms = norms[np.searchsorted(norm_ids, total.row_ids)]
    col_norms = norms[np.searchsorted(norm_ids, total.col_ids)]
    entry_rows = np.repeat(np.arange(len(total.row_ids)), np.diff(sums.indptr))
    scores = sums.data / (row_norms[entry_rows] * col_norms[sums.indices] + shrinkage)
    scaled = sp.csr_matrix((scores, sums.indices, sums.indptr), shape=sums.shape)
    return LabelledRows(total.row_ids, total.col_ids, (scaled, *total.matrices[1:]))


def neighbour_candidates(total: LabelledRows, min_cooccurrence: int) -> ScoredRows:
    """Every pair's score, zeroed for self pairs and for pairs shared by fewer than ``min_cooccurrence`` users."""
    sums = total.matrices[0]
    own_column = np.repeat(np.searchsorted(total.col_ids, total.row_ids), np.diff(sums.indptr))
    excluded = sums.indices == own_column
    if min_cooccurrence > 1:
        counts = total.matrices[1]
        if not (np.array_equal(sums.indptr, counts.indptr) and np.array_equal(sums.indices, counts.indices)):
            raise AssertionError("co-occurrence sums and counts cover different pairs")
        excluded |= counts.data < min_cooccurrence
    return scored_rows(total, np.where(excluded, 0.0, sums.data))

