"""What Item CF and Swing share: the neighbour-table model, and the fit that builds it on the co-occurrence engine.

A co-occurrence estimator turns train interactions into one row per user (``user_id, items, anchors``),
plans the item blocks and the per-block kernel from them (``_plan``), and leaves the rest to
``cooccurrence.py``: routing users to item blocks, running the kernel in each, keeping the top neighbours.
"""

from __future__ import annotations

from typing import ClassVar

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ..columns import ITEM_ID, LAST_ITEM, NEIGHBOURS, QUERY_ID, RECOMMENDATIONS, empty_recommendations
from ..validation import check
from .base import RetrievalEstimator, RetrievalModel
from .cooccurrence import Kernel, map_item_blocks, materialised, route_to_item_blocks


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


class CooccurrenceEstimator(RetrievalEstimator):
    """Fit = user rows → item-block plan → blocked kernel → neighbour table. Families define the three steps."""

    model_class: ClassVar[type[ItemToItemModel]]

    def _user_rows(self, train: DataFrame) -> DataFrame:
        """``user_id, items, anchors``: each user's sorted distinct items and the positions it contributes to."""
        raise NotImplementedError

    def _plan(self, rows: DataFrame) -> tuple[int, Kernel]:
        """The number of item blocks and the kernel each block runs, from the (cached) user rows."""
        raise NotImplementedError

    def _fit_interactions(self, train: DataFrame) -> ItemToItemModel:
        rows = self._user_rows(train).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            num_blocks, kernel = self._plan(rows)
            neighbours = materialised(map_item_blocks(route_to_item_blocks(rows, num_blocks), kernel))
        finally:
            rows.unpersist()
        return self.model_class(tables={ItemToItemModel.NEIGHBOUR_TABLE: neighbours}, metadata={"item_blocks": num_blocks})
