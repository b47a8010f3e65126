"""Negative sampling for two-tower training: items drawn ∝ count^alpha, never one of the user's positives.

The draws are a pure function of ``(seed, row key, draw number)``, so the same seed gives the same
negatives however the examples are partitioned or ordered. A numpy ``Generator`` per partition would tie
the result to the partitioning; instead each uniform comes from a counter-based hash (SplitMix64 of the
seed, the row's stable key and the draw's counter), vectorised over a whole Arrow batch.

The item distribution (one id and one cumulative weight per catalog item) is collected and broadcast to
every task: about 16 bytes per item, so a few million items are fine. A catalog that does not fit would
be sampled in two stages instead: draw a popularity bucket from a small broadcast table of bucket masses,
then an item within the bucket by a join on (bucket, uniform rank).
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..columns import ITEM_ID, USER_ID
from ..errors import EmptyDataError, InvalidParameterError, MalformedDataError

NEGATIVE_ITEMS = "negative_items"
COUNT = "count"
ROW_KEY = "_row_key"
MAX_REJECTION_ROUNDS = 64


def sample_negatives(
    examples: DataFrame,
    num_negatives: int,
    alpha: float = 0.75,
    seed: int = 0,
    item_counts: DataFrame | None = None,
    row_key: str | None = None,
) -> DataFrame:
    """One row per negative: the example's columns with ``item_id`` replaced by a sampled item.

    ``examples`` holds positive ``(user_id, item_id)`` rows plus any context columns (kept on every
    negative). ``num_negatives`` items are drawn per example with probability ∝ ``count ** alpha``, where
    counts come from ``item_counts`` (``item_id, count``) or, by default, from ``examples`` itself; an
    item the user has as a positive anywhere in ``examples`` is never drawn. Draws are with replacement.
    ``row_key``: a column that identifies an example (default: a hash of all its columns).
    """
    with_negatives = sample_negative_items(examples, num_negatives, alpha, seed, item_counts, row_key=row_key)
    context = [c for c in examples.columns if c != ITEM_ID]
    return with_negatives.select(*context, F.explode(NEGATIVE_ITEMS).alias(ITEM_ID)).select(*examples.columns)


def sample_negative_items(
    examples: DataFrame,
    num_negatives: int,
    alpha: float = 0.75,
    seed: int = 0,
    item_counts: DataFrame | None = None,
    output_col: str = NEGATIVE_ITEMS,
    row_key: str | None = None,
) -> DataFrame:
    """``examples`` plus ``output_col``: ``array<long>`` of ``num_negatives`` sampled items per example.

    Same law as ``sample_negatives``. A user whose positives cover every item with non-zero weight gets
    an empty array (there is nothing left to draw).
    """
    _check_arguments(examples, num_negatives, alpha, seed, item_counts, row_key)
    items, cumulative = item_distribution(item_counts if item_counts is not None else examples, alpha)
    spark = examples.sparkSession
    distribution = spark.sparkContext.broadcast((items, cumulative))
    key = F.xxhash64(F.col(row_key)) if row_key else F.xxhash64(*[F.col(c) for c in examples.columns])
    keyed = examples.withColumn(ROW_KEY, key)
    # All of a user's rows meet in one partition, contiguous, so each user's positives are known locally.
    grouped = keyed.repartition(USER_ID).sortWithinPartitions(USER_ID, ROW_KEY)
    output_schema = T.StructType(examples.schema.fields + [T.StructField(output_col, T.ArrayType(T.LongType()))])
    draw = _partition_sampler(distribution, num_negatives, seed, examples.columns, output_col)
    return grouped.mapInPandas(draw, output_schema)


def _check_arguments(examples, num_negatives, alpha, seed, item_counts, row_key) -> None:
    if not isinstance(num_negatives, int) or isinstance(num_negatives, bool) or num_negatives < 1:
        raise InvalidParameterError(f"num_negatives must be a positive integer, got {num_negatives!r}")
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
        raise InvalidParameterError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InvalidParameterError(f"seed must be an integer, got {seed!r}")
    missing = [c for c in (USER_ID, ITEM_ID) if c not in examples.columns]
    if missing:
        raise MalformedDataError(f"examples lack column(s) {', '.join(missing)}")
    if item_counts is not None and not {ITEM_ID, COUNT} <= set(item_counts.columns):
        raise MalformedDataError(f"item_counts needs columns {ITEM_ID}, {COUNT}; it has {', '.join(item_counts.columns)}")
    if row_key is not None and row_key not in examples.columns:
        raise MalformedDataError(f"row_key {row_key!r} is not a column of examples")


def item_distribution(counted: DataFrame, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Sorted item ids and the cumulative sampling probabilities ∝ count ** alpha (items with count > 0).

    ``counted`` has ``item_id, count`` or is a table of events whose ``item_id`` occurrences are counted.
    """
    if COUNT not in counted.columns:
        counted = counted.groupBy(ITEM_ID).agg(F.count(F.lit(1)).alias(COUNT))
    rows = counted.where(F.col(COUNT) > 0).groupBy(ITEM_ID).agg(F.sum(COUNT).alias(COUNT)).orderBy(ITEM_ID).collect()
    if not rows:
        raise EmptyDataError("no item has a positive count: nothing to sample negatives from")
    items = np.array([r[ITEM_ID] for r in rows], dtype=np.int64)
    weights = np.array([r[COUNT] for r in rows], dtype=np.float64) ** alpha
    cumulative = np.cumsum(weights)
    return items, cumulative / cumulative[-1]


def _partition_sampler(distribution, num_negatives: int, seed: int, columns: list[str], output_col: str):
    def sample(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        items, cumulative = distribution.value
        for users_complete in _whole_users(frames):
            negatives = draw_negatives(users_complete, items, cumulative, num_negatives, seed)
            result = users_complete[columns].copy()
            result[output_col] = negatives
            yield result

    return sample


def _whole_users(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Regroup batches of user-sorted rows so that every yielded frame holds all rows of its users."""
    pending = None
    for frame in frames:
        if pending is not None:
            frame = pd.concat([pending, frame], ignore_index=True)
        if frame.empty:
            continue
        last = frame[USER_ID].iloc[-1]
        tail = (frame[USER_ID] == last).to_numpy()
        pending = frame[tail]
        if (~tail).any():
            yield frame[~tail].reset_index(drop=True)
    if pending is not None and not pending.empty:
        yield pending.reset_index(drop=True)


def draw_negatives(frame: pd.DataFrame, items: np.ndarray, cumulative: np.ndarray, num_negatives: int, seed: int) -> list:
    """Per row of ``frame`` (all rows of its users), ``num_negatives`` items none of which the user has."""
    catalog = len(items)
    user_codes, _ = pd.factorize(frame[USER_ID], sort=False)
    user_codes = user_codes.astype(np.int64)
    positions, known = _catalog_positions(items, frame[ITEM_ID].to_numpy())
    forbidden = np.unique(user_codes[known] * catalog + positions[known])
    keys = frame[ROW_KEY].to_numpy().astype(np.int64).view(np.uint64)

    rows = np.repeat(np.arange(len(frame)), num_negatives)
    slots = np.tile(np.arange(num_negatives, dtype=np.uint64), len(frame))
    drawn = np.full(len(rows), -1, dtype=np.int64)
    open_slots = np.arange(len(rows))
    for round_number in range(MAX_REJECTION_ROUNDS):
        counters = slots[open_slots] + np.uint64(round_number * num_negatives)
        u = uniform(seed, keys[rows[open_slots]], counters)
        candidates = np.minimum(np.searchsorted(cumulative, u, side="right"), catalog - 1)
        accepted = ~np.isin(user_codes[rows[open_slots]] * catalog + candidates, forbidden)
        drawn[open_slots[accepted]] = candidates[accepted]
        open_slots = open_slots[~accepted]
        if len(open_slots) == 0:
            break
    if len(open_slots):
        _draw_from_complement(drawn, open_slots, rows, slots, keys, user_codes, forbidden, cumulative, seed)

    per_row = drawn.reshape(len(frame), num_negatives)
    return [items[r[r >= 0]] if (r >= 0).all() else np.empty(0, dtype=np.int64) for r in per_row]


def _catalog_positions(items: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each value in the sorted ``items``, and whether the value is there at all."""
    positions = np.minimum(np.searchsorted(items, values), len(items) - 1)
    return positions, items[positions] == values


def _draw_from_complement(drawn, open_slots, rows, slots, keys, user_codes, forbidden, cumulative, seed) -> None:
    """Exact draws for the rare rows whose user owns most of the mass: the distribution without the positives."""
    catalog = len(cumulative)
    weights = np.diff(np.concatenate([[0.0], cumulative]))
    for user in np.unique(user_codes[rows[open_slots]]):
        owned = forbidden[(forbidden >= user * catalog) & (forbidden < (user + 1) * catalog)] - user * catalog
        remaining = weights.copy()
        remaining[owned] = 0.0
        if remaining.sum() <= 0:
            continue
        remaining_cumulative = np.cumsum(remaining) / remaining.sum()
        mine = open_slots[user_codes[rows[open_slots]] == user]
        u = uniform(seed, keys[rows[mine]], slots[mine] + np.uint64(MAX_REJECTION_ROUNDS * 2**20))
        drawn[mine] = np.minimum(np.searchsorted(remaining_cumulative, u, side="right"), catalog - 1)


def uniform(seed: int, keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1), a pure function of (seed, key, counter): SplitMix64 applied three times."""
    with np.errstate(over="ignore"):
        seeded = _splitmix64(np.full(len(keys), seed & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64))
        mixed = _splitmix64(_splitmix64(seeded ^ keys.astype(np.uint64)) + counters.astype(np.uint64))
    return (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
