"""Temporal leave-last-out split, exactly as ``PROTOCOL.md`` defines it (window functions only)."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ..columns import (
    INTERACTION_COLUMNS,
    ITEM_ID,
    LAST_ITEM,
    QUERY_ID,
    RATING,
    RECENT_ITEMS,
    TIMESTAMP,
    USER_ID,
)
from ..errors import InvalidParameterError
from .context import DEFAULT_HISTORY, EVENT_COUNT, EVENT_INDEX, with_sequence_context

TEST_COLUMNS = (QUERY_ID, USER_ID, ITEM_ID, LAST_ITEM, RECENT_ITEMS, TIMESTAMP)


@dataclass
class Split:
    """``train``: interactions (``user_id, item_id, rating, timestamp``).
    ``test``: one query per held-out positive event (``query_id, user_id, item_id`` = the label,
    ``last_item, recent_items, timestamp``).
    """

    train: DataFrame
    test: DataFrame
    holdout: int
    positive_threshold: float
    events: DataFrame

    def counts(self) -> dict[str, int]:
        """Sizes of the split, computed in one aggregation over the annotated events."""
        holdout = self.holdout
        short = F.col(EVENT_COUNT) < holdout + 1
        held_out = (~short) & (F.col(EVENT_INDEX) >= F.col(EVENT_COUNT) - holdout)
        row = self.events.agg(
            F.countDistinct(USER_ID).alias("users"),
            F.countDistinct(F.when(short, F.col(USER_ID))).alias("short_users"),
            F.count(F.when(~held_out, 1)).alias("train_events"),
            F.count(F.when(held_out, 1)).alias("held_out_events"),
            F.count(F.when(held_out & (F.col(RATING) > self.positive_threshold), 1)).alias("test_queries"),
            F.countDistinct(F.when(~held_out, F.col(ITEM_ID))).alias("train_items"),
        ).first()
        return {key: int(row[key]) for key in row.asDict()}


def temporal_split(
    ratings: DataFrame,
    holdout: int = 3,
    positive_threshold: float = 2.0,
    history: int = DEFAULT_HISTORY,
) -> Split:
    """Hold out each user's last ``holdout`` events; held-out events rated above ``positive_threshold`` are queries.

    Events are ordered per user by ``(timestamp, item_id)``. Users with fewer than ``holdout + 1`` events give
    no queries; their events stay in train (they are never evaluated, so nothing leaks) and
    ``Split.counts()["short_users"]`` says how many there were. ``query_id = user_id * holdout + j`` where
    ``j`` is the event's position among that user's held-out events: unique, stable and computed without a
    global sort.
    """
    if not isinstance(holdout, int) or holdout < 1:
        raise InvalidParameterError(f"holdout must be a positive integer, got {holdout!r}")
    if not isinstance(history, int) or history < 1:
        raise InvalidParameterError(f"history must be a positive integer, got {history!r}")
    try:
        positive_threshold = float(positive_threshold)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"positive_threshold must be a number, got {positive_threshold!r}") from None

    events = with_sequence_context(ratings.select(*INTERACTION_COLUMNS), history=history)
    first_held_out = F.col(EVENT_COUNT) - holdout
    is_held_out = (F.col(EVENT_COUNT) >= holdout + 1) & (F.col(EVENT_INDEX) >= first_held_out)

    train = events.where(~is_held_out).select(*INTERACTION_COLUMNS)
    test = events.where(is_held_out & (F.col(RATING) > positive_threshold)).select(
        (F.col(USER_ID) * holdout + (F.col(EVENT_INDEX) - first_held_out)).alias(QUERY_ID),
        USER_ID,
        ITEM_ID,
        LAST_ITEM,
        RECENT_ITEMS,
        TIMESTAMP,
    )
    return Split(train=train, test=test, holdout=holdout, positive_threshold=positive_threshold, events=events)
