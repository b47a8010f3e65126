"""Load, at a small size: a test set 10x the training users gets the same answers as one query at a
time would, and the evaluator's averages over it equal a plain-Python computation. Timing and memory are
measured by benchmarks/load.py; this only checks correctness."""

import math

import pytest
from pyspark.sql import functions as F

from spark_retrieval.columns import ITEM_ID, LAST_ITEM, NEIGHBOURS, QUERY_ID, RECOMMENDATIONS, USER_ID
from spark_retrieval.data import synthetic_interactions
from spark_retrieval.evaluation import evaluate
from spark_retrieval.models import ALS, ItemCF

USERS, ITEMS, EVENTS = 120, 90, 4000
FACTOR = 10
K = 20


@pytest.fixture(scope="module")
def train(spark):
    return synthetic_interactions(spark, USERS, ITEMS, EVENTS, seed=11).cache()


@pytest.fixture(scope="module")
def test_set(spark):
    """FACTOR x USERS queries from spark.range: a training user, a last item and a label each (item ids up to
    ITEMS + 5, so a few last items and labels are unknown to the models)."""

    def draw(stream, size):
        return (F.pmod(F.xxhash64(F.lit(3), F.lit(stream), F.col("id")), F.lit(size)) + 1).cast("long")

    return spark.range(FACTOR * USERS).select(
        F.col("id").alias(QUERY_ID), draw(1, USERS).alias(USER_ID), draw(2, ITEMS + 5).alias(LAST_ITEM),
        draw(3, ITEMS + 5).alias(ITEM_ID),
    ).cache()


def lists(recommendations, key=QUERY_ID):
    return {row[key]: [entry[ITEM_ID] for entry in row[RECOMMENDATIONS]] for row in recommendations.collect()}


def reference_metrics(predicted, labels, k):
    """Mean precision, recall, MAP, NDCG and hit rate @k as docs/protocol.md defines them (labels: query -> set)."""
    totals = dict.fromkeys(("precision", "recall", "map", "ndcg", "hit_rate"), 0.0)
    for query, relevant in labels.items():
        ranked = predicted.get(query, [])[:k]
        hits, precision_sum, dcg = 0, 0.0, 0.0
        for position, item in enumerate(ranked, start=1):
            if item in relevant:
                hits += 1
                precision_sum += hits / position
                dcg += 1.0 / math.log2(position + 1)
        ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(relevant), k) + 1))
        totals["precision"] += hits / k
        totals["recall"] += hits / len(relevant)
        totals["map"] += precision_sum / min(len(relevant), k)
        totals["ndcg"] += dcg / ideal
        totals["hit_rate"] += 1.0 if hits else 0.0
    return {name: value / len(labels) for name, value in totals.items()}


def labels_of(test_set):
    labels = {}
    for row in test_set.select(QUERY_ID, ITEM_ID).collect():
        labels.setdefault(row[QUERY_ID], set()).add(row[ITEM_ID])
    return labels


def assert_metrics_match(result, expected, queries):
    assert result["queries"] == queries
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-9), name


def test_item_to_item_under_a_test_set_ten_times_the_users(train, test_set):
    model = ItemCF(k_neighbours=30).fit(train)
    recommendations = model.recommend(test_set, K)
    neighbours = {row[ITEM_ID]: [e[ITEM_ID] for e in row[NEIGHBOURS]][:K] for row in model.neighbour_table.collect()}
    last_item = {row[QUERY_ID]: row[LAST_ITEM] for row in test_set.collect()}
    got = lists(recommendations)
    assert len(got) == FACTOR * USERS
    assert all(got[query] == neighbours.get(item, []) for query, item in last_item.items())
    assert any(got.values()) and not all(got.values())  # known and unknown last items both occur

    result = evaluate(recommendations, test_set, k=K)
    assert_metrics_match(result, reference_metrics(got, labels_of(test_set), K), FACTOR * USERS)


def test_user_to_item_under_a_test_set_ten_times_the_users(spark, train, test_set):
    model = ALS(rank=8, max_iter=3, num_blocks=2).fit(train)
    recommendations = model.recommend(test_set, K)
    per_user = lists(model.recommend_for_users(train.select(USER_ID).distinct(), K), key=USER_ID)
    seen = {row[USER_ID]: set(row["items"]) for row in model.seen().collect()}
    user_of = {row[QUERY_ID]: row[USER_ID] for row in test_set.collect()}
    got = lists(recommendations)
    assert len(got) == FACTOR * USERS
    for query, user in user_of.items():
        assert got[query] == per_user[user]
        assert len(got[query]) == K and not set(got[query]) & seen[user]

    result = evaluate(recommendations, test_set, k=K)
    assert_metrics_match(result, reference_metrics(got, labels_of(test_set), K), FACTOR * USERS)
