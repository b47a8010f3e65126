"""Temporal leave-last-out split, exactly as ``docs/protocol.md`` defines it (window functions only)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
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
from ..errors import EmptyDataError, InvalidParameterError
from .context import DEFAULT_HISTORY, EVENT_COUNT, EVENT_INDEX, with_sequence_context

TEST_COLUMNS = (QUERY_ID, USER_ID, ITEM_ID, LAST_ITEM, RECENT_ITEMS, TIMESTAMP)
DUPLICATES = "_user_duplicates"
"""Per kept event: how many events of its user were dropped as older copies of a (user, item) pair."""

logger = logging.getLogger(__name__)


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
            F.coalesce(F.sum(F.when(F.col(EVENT_INDEX) == 0, F.col(DUPLICATES))), F.lit(0)).alias("duplicate_events"),
        ).first()
        counts = {key: int(row[key]) for key in row.asDict()}
        if counts["duplicate_events"]:
            logger.warning(
                "%d duplicate event(s) dropped: each repeated (user_id, item_id) pair keeps only its latest event",
                counts["duplicate_events"],
            )
        return counts

    def require_queries(self, counts: dict[str, int] | None = None, source: str = "the dataset") -> None:
        """Raise ``EmptyDataError`` saying why when the split holds no test query (``counts``: ``self.counts()``)."""
        counts = self.counts() if counts is None else counts
        if counts["test_queries"]:
            return
        if counts["held_out_events"] == 0:
            raise EmptyDataError(
                f"{source} gives no test queries: none of its {counts['users']} user(s) has more than "
                f"{self.holdout} events (holdout={self.holdout} needs at least {self.holdout + 1} per user)"
            )
        raise EmptyDataError(
            f"{source} gives no test queries: none of the {counts['held_out_events']} held-out events is rated "
            f"above positive_threshold={self.positive_threshold:g}"
        )


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

    Duplicate events — several events of one (user, item) pair — keep only the latest (largest timestamp,
    then highest rating); ``Split.counts()["duplicate_events"]`` says how many were dropped.
    """
    if not isinstance(holdout, int) or holdout < 1:
        raise InvalidParameterError(f"holdout must be a positive integer, got {holdout!r}")
    if not isinstance(history, int) or history < 1:
        raise InvalidParameterError(f"history must be a positive integer, got {history!r}")
    try:
        positive_threshold = float(positive_threshold)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"positive_threshold must be a number, got {positive_threshold!r}") from None
    if not math.isfinite(positive_threshold):
        raise InvalidParameterError(f"positive_threshold must be a finite number, got {positive_threshold!r}")

    events = with_sequence_context(latest_per_pair(ratings.select(*INTERACTION_COLUMNS)), history=history)
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


def validation_split(
    train: DataFrame,
    holdout: int = 3,
    positive_threshold: float = 2.0,
    history: int = DEFAULT_HISTORY,
) -> Split:
    """The same protocol applied once more inside ``train``: a validation split for tuning.

    Each user's last ``holdout`` *train* events are validation events; those rated above
    ``positive_threshold`` are validation queries, with ``last_item`` / ``recent_items`` computed from the
    user's train sequence alone. ``Split.train`` is train minus the validation events, ``Split.test`` the
    validation queries, ``Split.counts()`` their sizes (``test_queries`` = validation queries). Users with at
    most ``holdout`` train events give no validation query and keep all their events in its train.

    The test set is not an argument: nothing a tuner computes from this split can depend on a test event.
    ``train`` is normally ``temporal_split(...).train`` (already one event per (user, item) pair).
    """
    return temporal_split(train, holdout=holdout, positive_threshold=positive_threshold, history=history)


def latest_per_pair(ratings: DataFrame) -> DataFrame:
    """``ratings`` with only the latest event of each (user, item) pair (largest timestamp, then highest
    rating), plus ``_user_duplicates``: how many of the user's events were dropped.

    Both windows are partitioned by user alone, like the sequence windows after them, so the whole split
    still shuffles the events once.
    """
    by_pair = Window.partitionBy(USER_ID).orderBy(
        F.col(ITEM_ID).asc(), F.col(TIMESTAMP).desc(), F.col(RATING).desc_nulls_last()
    )
    repeat = F.coalesce(F.lag(ITEM_ID, 1).over(by_pair) == F.col(ITEM_ID), F.lit(False))
    flagged = ratings.withColumn("_repeat", repeat)
    counted = flagged.withColumn(DUPLICATES, F.sum(F.col("_repeat").cast("long")).over(Window.partitionBy(USER_ID)))
    return counted.where(~F.col("_repeat")).drop("_repeat")
