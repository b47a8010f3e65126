"""Global Hot: the most frequent train items, the same list for every query (the popularity baseline)."""

from __future__ import annotations

from typing import ClassVar

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ..columns import ITEM_ID, QUERY_ID, RECOMMENDATIONS, SCORE
from .base import RetrievalEstimator, RetrievalModel

ITEM_COUNTS = "item_counts"


class GlobalHot(RetrievalEstimator):
    """Recommend the ``k`` items with the most train events (score = event count), ties by smaller item id.

    It has no parameters, so nothing to tune.
    """

    SEARCH_SPACE: ClassVar[dict] = {}
    """Empty: Global Hot has no parameters; the tuner evaluates it once, as it is."""

    def _fit_interactions(self, train: DataFrame) -> "GlobalHotModel":
        counts = train.groupBy(ITEM_ID).agg(F.count(F.lit(1)).cast("double").alias(SCORE))
        return GlobalHotModel(tables={ITEM_COUNTS: counts})


class GlobalHotModel(RetrievalModel):
    def query_columns(self) -> tuple[str, ...]:
        return (QUERY_ID,)

    def top_items(self, k: int) -> DataFrame:
        """One row holding the ``k`` best items as ``recommendations`` (a k-row sort, then one tiny array)."""
        best = self.tables[ITEM_COUNTS].orderBy(F.col(SCORE).desc(), F.col(ITEM_ID).asc()).limit(k)
        return best.agg(
            F.transform(
                F.sort_array(F.collect_list(F.struct((-F.col(SCORE)).alias("_neg"), ITEM_ID, SCORE))),
                lambda e: F.struct(e[ITEM_ID].alias(ITEM_ID), e[SCORE].alias(SCORE)),
            ).alias(RECOMMENDATIONS)
        )

    def _recommend(self, queries: DataFrame, k: int) -> DataFrame:
        return queries.select(QUERY_ID).crossJoin(F.broadcast(self.top_items(k)))
