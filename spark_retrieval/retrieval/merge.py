"""Merge several channels' recommendation lists into one candidate list per query.

A *channel* is any DataFrame ``query_id, recommendations: array<struct<item_id, score>>`` (best first, distinct
items, as every model's ``recommend`` returns). Three strategies, each one Spark job over the channels' lists
(an exploded union, one aggregation per (query, item), one per query; nothing reaches the driver):

- ``quota``: channel after channel in the stated order, each takes its best ``quotas[c]`` items not already
  taken; slots left empty (a channel with too few new items) are back-filled from everything not taken yet,
  round-robin (rank 1 of every channel in channel order, then rank 2, …).
- ``rrf``: reciprocal rank fusion, ``score = Σ_c weights[c] / (rrf_k + rank_c)`` over the channels that returned
  the item (ranks from 1); ties by the smaller item id.
- ``round_robin``: rank 1 of every channel in channel order, then rank 2, …, each item where it first appears.

The merged list keeps every item's provenance: which channels returned it and at which rank. ``quota`` and
``round_robin`` order by position, so their score is ``1 / position``; ``rrf``'s score is the fused score.
"""

from __future__ import annotations

from functools import reduce
from typing import Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..columns import ITEM_ID, QUERY_ID, RECOMMENDATIONS, SCORE, require_columns
from ..errors import InvalidParameterError

STRATEGIES = ("quota", "rrf", "round_robin")
DEFAULT_RRF_K = 60.0
"""The constant of Cormack, Clarke and Büttcher's reciprocal rank fusion (SIGIR 2009)."""

PROVENANCE = "provenance"
CHANNEL = "channel"
RANK = "rank"
CHANNEL_RANK = T.StructType([T.StructField(CHANNEL, T.StringType()), T.StructField(RANK, T.IntegerType())])
PROVENANCE_ENTRY = T.StructType(
    [T.StructField(ITEM_ID, T.LongType()), T.StructField("channels", T.ArrayType(CHANNEL_RANK))]
)
"""``provenance``: one entry per merged item, in the order of ``recommendations``: the channels that returned it
(in channel order) with its rank (1-based) in each."""

_ORDER = "_order"


def check_channels(
    channels: Sequence[str],
    weights: Sequence[float] | None = None,
    rrf_k: float = DEFAULT_RRF_K,
    per_channel: Mapping[str, Sequence | None] | None = None,
) -> None:
    """Raise ``InvalidParameterError`` naming the problem: no channel, duplicate channels, weights negative or all
    zero, ``rrf_k`` not positive, or a per-channel list (weights, ``per_channel``'s quotas or shares) whose length
    is not one per channel."""
    if not channels:
        raise InvalidParameterError("a merge needs at least one channel")
    if len(set(channels)) != len(channels):
        raise InvalidParameterError(f"channels must be distinct, got {list(channels)}")
    for name, values in {"weights": weights, **dict(per_channel or {})}.items():
        if values is not None and len(values) != len(channels):
            raise InvalidParameterError(f"{len(values)} {name} for {len(channels)} channels ({', '.join(channels)})")
    if weights is not None:
        if any(w < 0 for w in weights):
            raise InvalidParameterError(f"weights must be >= 0, got {list(weights)}")
        if not any(w > 0 for w in weights):
            raise InvalidParameterError(f"at least one weight must be > 0, got {list(weights)}")
    if not rrf_k > 0:
        raise InvalidParameterError(f"rrf_k must be > 0, got {rrf_k!r}")


def check_merge(
    channels: Sequence[str],
    strategy: str,
    k: int,
    quotas: Sequence[int] | None = None,
    weights: Sequence[float] | None = None,
    rrf_k: float = DEFAULT_RRF_K,
) -> None:
    """``check_channels``, then: an unknown strategy, ``k`` not positive, quotas missing, negative or not summing
    to ``k`` — each one ``InvalidParameterError`` naming the problem."""
    check_channels(channels, weights, rrf_k, {"quotas": quotas})
    if strategy not in STRATEGIES:
        raise InvalidParameterError(f"unknown merge strategy {strategy!r}; choose from: {', '.join(STRATEGIES)}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidParameterError(f"k must be a positive integer, got {k!r}")
    if strategy == "quota":
        if quotas is None:
            raise InvalidParameterError("the quota strategy needs quotas (or shares), one per channel")
        if any(not isinstance(q, int) or isinstance(q, bool) or q < 0 for q in quotas):
            raise InvalidParameterError(f"quotas must be integers >= 0, got {list(quotas)}")
        if sum(quotas) != k:
            raise InvalidParameterError(f"quotas must sum to k = {k}, got {list(quotas)} (sum {sum(quotas)})")


def quotas_from_shares(shares: Sequence[float], k: int) -> list[int]:
    """Integer quotas summing to ``k`` in proportion to ``shares`` (largest remainder; ties to the earlier channel)."""
    if not shares or any(s < 0 for s in shares) or not any(s > 0 for s in shares):
        raise InvalidParameterError(f"shares must be >= 0 with at least one > 0, got {list(shares)}")
    total = float(sum(shares))
    exact = [k * s / total for s in shares]
    quotas = [int(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in by_remainder[: k - sum(quotas)]:
        quotas[i] += 1
    return quotas


def channel_candidates(lists: Mapping[str, DataFrame], depth: int) -> DataFrame:
    """``query_id, item_id, channel, _order, rank``: each channel's best ``depth`` items, one row each."""
    frames = []
    for order, (name, frame) in enumerate(lists.items()):
        require_columns(frame, (QUERY_ID, RECOMMENDATIONS), f"channel {name!r}")
        exploded = frame.select(QUERY_ID, F.posexplode(F.slice(RECOMMENDATIONS, 1, depth)).alias("_position", "_r"))
        frames.append(
            exploded.select(
                QUERY_ID,
                F.col("_r")[ITEM_ID].cast("long").alias(ITEM_ID),
                F.lit(name).alias(CHANNEL),
                F.lit(order).alias(_ORDER),
                (F.col("_position") + 1).cast("int").alias(RANK),
            )
        )
    return reduce(DataFrame.unionByName, frames)


def merge_lists(
    lists: Mapping[str, DataFrame],
    k: int,
    strategy: str,
    quotas: Sequence[int] | None = None,
    weights: Sequence[float] | None = None,
    rrf_k: float = DEFAULT_RRF_K,
    depth: int | None = None,
) -> DataFrame:
    """``query_id, recommendations, provenance``: the channels' lists (in the mapping's order) merged to ``k`` items.

    ``depth``: how many of each channel's items are candidates (default ``k``). ``weights``: RRF's per-channel
    weights (default 1 each). A query that no channel answers has no row (the evaluator scores it 0).
    """
    channels = list(lists)
    check_merge(channels, strategy, k, quotas, weights, rrf_k)
    depth = k if depth is None else depth
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise InvalidParameterError(f"depth must be a positive integer, got {depth!r}")
    weight_of = F.element_at(
        F.array(*[F.lit(float(w)) for w in (weights or [1.0] * len(channels))]), F.col(_ORDER) + 1
    )
    candidates = channel_candidates(lists, depth).withColumn("_weight", weight_of)
    # One row per (query, item): its sources in channel order; RRF sums over them in that order, so the
    # score's bits do not depend on the order rows arrive in.
    sources = F.sort_array(F.collect_list(F.struct(_ORDER, RANK, CHANNEL, "_weight")))
    items = candidates.groupBy(QUERY_ID, ITEM_ID).agg(sources.alias("_sources"))
    items = items.select(
        QUERY_ID,
        F.struct(
            F.col(ITEM_ID),
            F.transform("_sources", lambda s: F.struct(s[CHANNEL].alias(CHANNEL), s[RANK].alias(RANK))).alias("channels"),
            F.aggregate("_sources", F.lit(0.0), lambda acc, s: acc + s["_weight"] / (F.lit(float(rrf_k)) + s[RANK])).alias("_rrf"),
            F.array_min(F.transform("_sources", lambda s: F.struct(s[RANK].alias(RANK), s[_ORDER].alias(_ORDER)))).alias("_first"),
            F.transform("_sources", lambda s: F.struct(s[_ORDER].alias(_ORDER), s[RANK].alias(RANK))).alias("_at"),
        ).alias("_item"),
    )
    per_query = items.groupBy(QUERY_ID).agg(F.collect_list("_item").alias("_items"))
    if strategy == "rrf":
        ranked = F.sort_array(
            F.transform("_items", lambda e: F.struct((-e["_rrf"]).alias("_neg"), e[ITEM_ID].alias(ITEM_ID), e["channels"].alias("channels")))
        )
        top = F.slice(ranked, 1, k)
        return per_query.select(
            QUERY_ID,
            F.transform(top, lambda e: F.struct(e[ITEM_ID].alias(ITEM_ID), (-e["_neg"]).alias(SCORE))).alias(RECOMMENDATIONS),
            F.transform(top, lambda e: F.struct(e[ITEM_ID].alias(ITEM_ID), e["channels"].alias("channels"))).alias(PROVENANCE),
        )
    round_robin = F.transform(
        F.sort_array(F.transform("_items", lambda e: F.struct(e["_first"].alias("_first"), e[ITEM_ID].alias(ITEM_ID)))),
        lambda e: e[ITEM_ID],
    )
    if strategy == "round_robin":
        per_query = per_query.withColumn("_ordered", round_robin)
    else:
        per_query = _quota_order(per_query, quotas, round_robin)
    chosen = per_query.select(
        QUERY_ID,
        F.slice("_ordered", 1, k).alias("_chosen"),
        F.map_from_entries(F.transform("_items", lambda e: F.struct(e[ITEM_ID], e["channels"]))).alias("_channels"),
    )
    return chosen.select(
        QUERY_ID,
        F.transform("_chosen", lambda item, i: F.struct(item.alias(ITEM_ID), (1.0 / (i + 1)).alias(SCORE))).alias(RECOMMENDATIONS),
        F.transform(
            "_chosen", lambda item, i: F.struct(item.alias(ITEM_ID), F.element_at("_channels", item).alias("channels"))
        ).alias(PROVENANCE),
    )


def _quota_order(per_query: DataFrame, quotas: Sequence[int], round_robin: Column) -> DataFrame:
    """Adds ``_ordered``: each channel's best new ``quotas[c]`` items in turn, then the round-robin back-fill."""
    # Every (channel, rank, item) of the query, sorted by channel then rank: one channel's list is a filter of it.
    by_channel = F.sort_array(
        F.flatten(
            F.transform(
                "_items",
                lambda e: F.transform(e["_at"], lambda s: F.struct(s[_ORDER].alias(_ORDER), s[RANK].alias(RANK), e[ITEM_ID].alias(ITEM_ID))),
            )
        )
    )
    frame = per_query.withColumn("_by_channel", by_channel).withColumn("_picked", F.array().cast("array<long>"))
    for order, quota in enumerate(quotas):
        if quota == 0:
            continue
        new = F.filter("_by_channel", lambda c: (c[_ORDER] == order) & ~F.array_contains(F.col("_picked"), c[ITEM_ID]))
        frame = frame.withColumn("_picked", F.concat("_picked", F.slice(F.transform(new, lambda c: c[ITEM_ID]), 1, quota)))
    back_fill = F.filter(round_robin, lambda item: ~F.array_contains(F.col("_picked"), item))
    return frame.withColumn("_ordered", F.concat("_picked", back_fill))
