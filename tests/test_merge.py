"""Merging channels' lists (``retrieval.merge``): quota back-fill, RRF order and ties, round robin, dedupe and
provenance on hand-built lists; every strategy against a plain-Python merge on random lists; bad settings."""

import random

import pytest

from spark_retrieval.columns import ITEM_ID, QUERY_ID, RECOMMENDATIONS, SCORE
from spark_retrieval.errors import InvalidParameterError
from spark_retrieval.retrieval.merge import PROVENANCE, merge_lists, quotas_from_shares

SCHEMA = f"{QUERY_ID} long, {RECOMMENDATIONS} array<struct<{ITEM_ID}: long, {SCORE}: double>>"


def channel(spark, lists):
    """{query_id: [item, …]} → a channel's list DataFrame (scores descending)."""
    rows = [(q, [(item, float(len(items) - i)) for i, item in enumerate(items)]) for q, items in lists.items()]
    return spark.createDataFrame(rows, SCHEMA)


def merged(frame):
    rows = frame.collect()
    return {
        r[QUERY_ID]: {
            "items": [e[ITEM_ID] for e in r[RECOMMENDATIONS]],
            "scores": [e[SCORE] for e in r[RECOMMENDATIONS]],
            "provenance": [(p[ITEM_ID], [(c["channel"], c["rank"]) for c in p["channels"]]) for p in r[PROVENANCE]],
        }
        for r in rows
    }


@pytest.fixture(scope="module")
def abc(spark):
    return {
        "a": channel(spark, {1: [1, 2, 3, 4], 2: [7]}),
        "b": channel(spark, {1: [2, 5, 6, 7]}),
        "c": channel(spark, {1: [8, 1, 9, 10], 3: [4, 5]}),
    }


def test_quota_takes_each_channels_new_best_items_in_order(abc):
    got = merged(merge_lists(abc, 4, "quota", quotas=[2, 1, 1]))
    assert got[1]["items"] == [1, 2, 5, 8]  # b's 2 is taken by a, so b gives its next item, 5
    assert got[1]["scores"] == [1.0, 0.5, 1 / 3, 0.25]
    assert got[1]["provenance"] == [(1, [("a", 1), ("c", 2)]), (2, [("a", 2), ("b", 1)]), (5, [("b", 2)]), (8, [("c", 1)])]


def test_quota_back_fills_unused_slots_round_robin(spark, abc):
    short = {**abc, "b": channel(spark, {1: [2]})}  # b has nothing new to give
    got = merged(merge_lists(short, 4, "quota", quotas=[2, 1, 1]))
    # a: 1, 2; b: none; c: 8; then round robin over what is left: rank 1 (all taken), rank 2 (a's 2, c's 1: taken),
    # rank 3: a's 3
    assert got[1]["items"] == [1, 2, 8, 3]
    # queries answered by some channels only still get k items when the others can fill them
    assert got[2]["items"] == [7] and got[3]["items"] == [4, 5]


def test_a_zero_quota_channel_still_back_fills(abc):
    got = merged(merge_lists(abc, 5, "quota", quotas=[0, 0, 5]))
    assert got[1]["items"] == [8, 1, 9, 10, 2]  # c's four, then the round-robin order's first new item (b's 2)


def test_rrf_sums_weighted_reciprocal_ranks_and_breaks_ties_by_item_id(abc):
    got = merged(merge_lists(abc, 6, "rrf", rrf_k=60.0))
    # 1: 1/61 + 1/62 (a1, c2) and 2: 1/62 + 1/61 (a2, b1) tie exactly → smaller id first; 3, 6, 9 all 1/63
    assert got[1]["items"] == [1, 2, 8, 5, 3, 6]
    assert got[1]["scores"][0] == got[1]["scores"][1] == 1 / 61 + 1 / 62
    weighted = merged(merge_lists(abc, 3, "rrf", weights=[0.0, 1.0, 3.0], rrf_k=1.0))
    # c weighs 3: 8 → 3/2, 1 → 3/3, 9 → 3/4; b's 2 → 1/2
    assert weighted[1]["items"] == [8, 1, 9]
    assert weighted[1]["provenance"][1] == (1, [("a", 1), ("c", 2)])  # a weighs 0 but still returned it


def test_round_robin_interleaves_ranks_and_removes_duplicates(abc):
    got = merged(merge_lists(abc, 6, "round_robin"))
    assert got[1]["items"] == [1, 2, 8, 5, 3, 6]  # rank 1: a1 b2 c8; rank 2: (a2) b5 (c1); rank 3: a3 b6
    assert got[1]["scores"] == [1 / (i + 1) for i in range(6)]


def test_depth_limits_what_each_channel_contributes(abc):
    got = merged(merge_lists(abc, 4, "round_robin", depth=1))
    assert got[1]["items"] == [1, 2, 8]  # one candidate per channel: fewer than k remain


def python_merge(lists, k, strategy, quotas=None, weights=None, rrf_k=60.0):
    """The specification, in plain Python, for one query: lists is [(channel, [item, …]), …]."""
    order = [(rank, c, item) for c, (_, items) in enumerate(lists) for rank, item in enumerate(items[:k], 1)]
    round_robin = []
    for _, _, item in sorted(order):
        if item not in round_robin:
            round_robin.append(item)
    if strategy == "rrf":
        score = {}
        for rank, c, item in order:
            score[item] = score.get(item, 0.0) + (weights[c] if weights else 1.0) / (rrf_k + rank)
        return sorted(score, key=lambda item: (-score[item], item))[:k]
    if strategy == "round_robin":
        return round_robin[:k]
    picked = []
    for c, (_, items) in enumerate(lists):
        picked += [item for item in items[:k] if item not in picked][: quotas[c]]
    return (picked + [item for item in round_robin if item not in picked])[:k]


@pytest.mark.parametrize("strategy", ["quota", "rrf", "round_robin"])
def test_every_strategy_matches_a_plain_python_merge_on_random_lists(spark, strategy):
    rng = random.Random(7)
    names, k = ["x", "y", "z"], 6
    per_query = {q: [(n, rng.sample(range(20), rng.randint(0, 9))) for n in names] for q in range(40)}
    frames = {
        n: channel(spark, {q: dict(lists)[n] for q, lists in per_query.items() if dict(lists)[n]}) for n in names
    }
    quotas, weights = [3, 1, 2], [1.0, 0.5, 2.0]
    got = merged(merge_lists(frames, k, strategy, quotas=quotas, weights=weights, rrf_k=5.0))
    for q, lists in per_query.items():
        expected = python_merge(lists, k, strategy, quotas=quotas, weights=weights, rrf_k=5.0)
        assert got.get(q, {"items": []})["items"] == expected, (q, lists)
        for item, sources in got.get(q, {"provenance": []})["provenance"]:
            assert sources == [(n, items.index(item) + 1) for n, items in lists if item in items[:k]]


def test_largest_remainder_quotas_sum_to_k():
    assert quotas_from_shares([1, 1, 1], 20) == [7, 7, 6]
    assert quotas_from_shares([0.5, 0.25, 0.25], 100) == [50, 25, 25]
    assert quotas_from_shares([3, 0, 1], 2) == [2, 0, 0]
    with pytest.raises(InvalidParameterError, match="shares"):
        quotas_from_shares([0, 0], 5)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"strategy": "quota", "quotas": [2, 1, 2]}, r"quotas must sum to k = 4, got \[2, 1, 2\]"),
        ({"strategy": "quota", "quotas": [4, 0]}, "2 quotas for 3 channels"),
        ({"strategy": "quota"}, "needs quotas"),
        ({"strategy": "rrf", "weights": [1.0, -1.0, 1.0]}, "weights must be >= 0"),
        ({"strategy": "rrf", "weights": [0.0, 0.0, 0.0]}, "at least one weight"),
        ({"strategy": "best"}, "unknown merge strategy 'best'"),
        ({"strategy": "rrf", "rrf_k": 0.0}, "rrf_k must be > 0"),
    ],
)
def test_bad_merge_settings_are_one_clear_error(abc, settings, message):
    with pytest.raises(InvalidParameterError, match=message):
        merge_lists(abc, 4, **settings)
