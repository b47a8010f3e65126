"""Query context from each user's ordered event sequence (window functions, no UDFs)."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from ..columns import ITEM_ID, LAST_ITEM, RECENT_ITEMS, TIMESTAMP, USER_ID

DEFAULT_HISTORY = 10
EVENT_INDEX = "event_index"
EVENT_COUNT = "event_count"
SEEN_ITEMS = "items"


def user_sequence_window():
    """Each user's events in protocol order: timestamp, then item id to break ties deterministically."""
    return Window.partitionBy(USER_ID).orderBy(F.col(TIMESTAMP).asc(), F.col(ITEM_ID).asc())


def with_sequence_context(events: DataFrame, history: int = DEFAULT_HISTORY) -> DataFrame:
    """Add ``event_index`` (0-based), ``event_count``, ``last_item`` and ``recent_items`` to every event.

    ``last_item`` is the previous event's item (null for a user's first event); ``recent_items`` holds up to
    ``history`` previous items, most recent last (empty for the first event).
    """
    ordered = user_sequence_window()
    previous = ordered.rowsBetween(-history, -1)
    return (
        events.withColumn(EVENT_INDEX, F.row_number().over(ordered) - 1)
        .withColumn(EVENT_COUNT, F.count(F.lit(1)).over(Window.partitionBy(USER_ID)))
        .withColumn(LAST_ITEM, F.lag(ITEM_ID, 1).over(ordered))
        .withColumn(RECENT_ITEMS, _previous_items(previous))
    )


def _previous_items(frame) -> Column:
    # collect_list over a ROWS frame keeps the frame's order, so the most recent item comes last.
    return F.collect_list(ITEM_ID).over(frame)


def seen_items(train: DataFrame) -> DataFrame:
    """``user_id, items: array<long>``: each user's distinct train items, ascending (what ``exclude_seen`` removes)."""
    return train.groupBy(USER_ID).agg(F.array_sort(F.collect_set(F.col(ITEM_ID).cast("long"))).alias(SEEN_ITEMS))
