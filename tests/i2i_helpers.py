"""Helpers shared by the Item CF and Swing tests: tiny interaction frames and neighbour-table comparisons."""

from collections import defaultdict

import numpy as np
from pyspark.sql import functions as F

from spark_retrieval.columns import ITEM_ID, NEIGHBOURS, SCORE

SCHEMA = "user_id long, item_id long, rating double, timestamp long"


def interactions(spark, pairs):
    return spark.createDataFrame([(u, i, 4.0, n) for n, (u, i) in enumerate(pairs)], SCHEMA)


def random_pairs(seed, users, items, events):
    """Random (user, item) events, repeats included."""
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(1, users + 1)), int(rng.integers(1, items + 1))) for _ in range(events)]


def neighbour_lists(model):
    return {r[ITEM_ID]: [(e[ITEM_ID], e[SCORE]) for e in r[NEIGHBOURS]] for r in model.neighbour_table.collect()}


def neighbour_scores(model):
    return {item: dict(entries) for item, entries in neighbour_lists(model).items()}


def assert_same_scores(got, expected):
    assert {i: set(n) for i, n in got.items()} == {i: set(n) for i, n in expected.items()}
    worst = max(abs(got[i][j] - expected[i][j]) for i in expected for j in expected[i])
    assert worst <= 1e-9


def seeded_sample(spark, pairs, seed, owner, member, size):
    """Per ``owner`` value, the ``size`` ``member`` values with the smallest xxhash64(seed, owner, member): the
    documented seeded sample (Item CF: a user's items; Swing: an item's users)."""
    frame = interactions(spark, sorted(set(pairs))).select(
        owner, member, F.xxhash64(F.lit(seed), F.col(owner), F.col(member)).alias("key")
    )
    keyed = defaultdict(list)
    for row in frame.collect():
        keyed[row[owner]].append((row["key"], row[member]))
    return {key: [value for _, value in sorted(entries)[:size]] for key, entries in keyed.items()}
