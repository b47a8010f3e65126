"""What each channel of a merged list adds: its own quality, the queries only it hits, how much the channels'
lists overlap, and how much of the merged list each one fills.

Every figure is a Spark aggregation over the channels' lists and the test labels; what reaches the driver is
one number per channel or per pair of channels.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Mapping

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .columns import ITEM_ID, QUERY_ID, require_columns
from .evaluation import EXACT_SUM, mean_metrics, per_query_metrics
from .retrieval.merge import CHANNEL, PROVENANCE, channel_candidates


def channel_analysis(
    lists: Mapping[str, DataFrame],
    test: DataFrame,
    k: int,
    merged: DataFrame | None = None,
    known: Mapping[str, Mapping[str, float]] | None = None,
    merged_metrics: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Per channel (top ``k`` of each list): ``recall``, ``ndcg``, ``hit_queries`` (test queries with a relevant
    item in the list), ``unique_hits`` (queries that this channel hits and no other does); per pair, ``overlap``:
    the mean Jaccard similarity of the two top-``k`` item sets over the queries where either is non-empty.
    With ``merged`` (``retrieval.merge`` output), per channel ``merged_share`` (the fraction of merged slots
    whose item this channel returned) and ``sole_share`` (returned by this channel alone), and the merged list's
    own ``recall`` and ``ndcg``. ``known`` (channel → ``evaluation.mean_metrics`` of its list at ``k`` on this
    ``test``) and ``merged_metrics`` (the same of ``merged``): figures the caller already has, not computed again.
    """
    require_columns(test, (QUERY_ID, ITEM_ID), "test")
    names = list(lists)
    channels: dict[str, dict[str, Any]] = {}
    for name, frame in lists.items():
        metrics = (known or {}).get(name) or mean_metrics(per_query_metrics(frame, test, k))
        channels[name] = {"recall": metrics["recall"], "ndcg": metrics["ndcg"], "hit_queries": 0, "unique_hits": 0}

    candidates = channel_candidates(lists, k)
    labels = test.select(QUERY_ID, ITEM_ID).distinct()
    hits = candidates.join(labels, [QUERY_ID, ITEM_ID]).select(QUERY_ID, CHANNEL).distinct()
    hitters = hits.groupBy(QUERY_ID).agg(F.collect_list(CHANNEL).alias("_hitters"))
    counted = hitters.select(F.explode("_hitters").alias(CHANNEL), (F.size("_hitters") == 1).cast("long").alias("_sole"))
    for row in counted.groupBy(CHANNEL).agg(F.count(F.lit(1)).alias("hits"), F.sum("_sole").alias("sole")).collect():
        channels[row[CHANNEL]].update(hit_queries=int(row["hits"]), unique_hits=int(row["sole"]))

    result: dict[str, Any] = {"k": k, "channels": channels, "overlap": overlap(candidates, names)}
    if merged is not None:
        own = merged_metrics or mean_metrics(per_query_metrics(merged, test, k))
        result["merged"] = {key: own[key] for key in ("recall", "ndcg")}
        for name, share in merged_shares(merged, names, k).items():
            channels[name].update(share)
    return result


def overlap(candidates: DataFrame, names: list[str]) -> dict[str, dict[str, float | None]]:
    """``{a: {b: mean Jaccard}}`` for every pair (both directions); None when no query has either list."""
    per_channel = candidates.groupBy(QUERY_ID, CHANNEL).agg(F.collect_list(ITEM_ID).alias("_items"))
    per_query = per_channel.groupBy(QUERY_ID).agg(
        F.map_from_entries(F.collect_list(F.struct(CHANNEL, "_items"))).alias("_lists")
    )
    empty = F.array().cast("array<long>")
    sums = []
    for a, b in combinations(names, 2):
        left = F.coalesce(F.element_at("_lists", F.lit(a)), empty)
        right = F.coalesce(F.element_at("_lists", F.lit(b)), empty)
        union = F.size(F.array_union(left, right))
        jaccard = F.when(union > 0, F.size(F.array_intersect(left, right)) / union)
        # Exact decimal sums: the mean does not depend on the order partial sums arrive in.
        sums += [F.sum(jaccard.cast(EXACT_SUM)).alias(f"{a}\t{b}"), F.count(jaccard).alias(f"{a}\t{b}\tn")]
    table: dict[str, dict[str, float | None]] = {name: {} for name in names}
    if not sums:
        return table
    row = per_query.agg(*sums).first()
    for a, b in combinations(names, 2):
        count = row[f"{a}\t{b}\tn"]
        value = float(row[f"{a}\t{b}"] / count) if count else None
        table[a][b] = table[b][a] = value
    return table


def merged_shares(merged: DataFrame, names: list[str], k: int) -> dict[str, dict[str, float]]:
    """Per channel, the fraction of the merged top-``k`` slots it returned (``merged_share``) and returned alone
    (``sole_share``)."""
    require_columns(merged, (QUERY_ID, PROVENANCE), "merged lists")
    slots = merged.select(F.explode(F.slice(PROVENANCE, 1, k)).alias("_slot")).select(
        F.transform("_slot.channels", lambda c: c[CHANNEL]).alias("_by")
    )
    aggregates = [F.count(F.lit(1)).alias("_slots")]
    for index, name in enumerate(names):
        aggregates += [
            F.sum(F.array_contains("_by", name).cast("long")).alias(f"_in{index}"),
            F.sum((F.array_contains("_by", name) & (F.size("_by") == 1)).cast("long")).alias(f"_sole{index}"),
        ]
    row = slots.agg(*aggregates).first()
    total = row["_slots"]
    return {
        name: {
            "merged_share": (row[f"_in{index}"] or 0) / total if total else 0.0,
            "sole_share": (row[f"_sole{index}"] or 0) / total if total else 0.0,
        }
        for index, name in enumerate(names)
    }
