import math
import random

import pytest
from pyspark.mllib.evaluation import RankingMetrics

from spark_retrieval.columns import ITEM_ID, QUERY_ID, RECOMMENDATIONS, SCORE
from spark_retrieval.errors import EmptyDataError, InvalidParameterError, MalformedDataError
from spark_retrieval.evaluation import evaluate, per_query_metrics

RECS_SCHEMA = f"{QUERY_ID} long, {RECOMMENDATIONS} array<struct<{ITEM_ID}: long, {SCORE}: double>>"
TEST_SCHEMA = f"{QUERY_ID} long, {ITEM_ID} long"


def random_case(seed, num_queries=300, num_items=40):
    rng = random.Random(seed)
    recs, labels = [], {}
    for q in range(num_queries):
        labels[q] = [rng.randrange(num_items) for _ in range(rng.choice([1, 1, 2, 3, 7]))]  # duplicates possible
        length = rng.choice([0, 1, 3, 10, 20, 30])  # empty, short and over-long lists
        predicted = [rng.randrange(num_items) for _ in range(length)]  # duplicate items possible
        if rng.random() < 0.1:
            continue  # query with no recommendation row at all
        recs.append((q, [(item, float(-pos)) for pos, item in enumerate(predicted)]))
    test_rows = [(q, item) for q, items in labels.items() for item in items]
    return recs, test_rows, labels


def ranking_metrics_reference(spark, recs, labels, k):
    predicted = dict((q, [item for item, _ in r]) for q, r in recs)
    pairs = [(predicted.get(q, []), sorted(set(items))) for q, items in labels.items()]
    metrics = RankingMetrics(spark.sparkContext.parallelize(pairs, 2))
    hits = [1.0 if set(p[:k]) & set(l) else 0.0 for p, l in pairs]
    return {
        "precision": metrics.precisionAt(k),
        "recall": metrics.recallAt(k),
        "map": metrics.meanAveragePrecisionAt(k),
        "ndcg": metrics.ndcgAt(k),
        "hit_rate": sum(hits) / len(hits),
        "queries": len(pairs),
    }


@pytest.mark.parametrize("k", [1, 5, 20])
def test_metrics_equal_ranking_metrics(spark, k):
    recs, test_rows, labels = random_case(seed=k)
    result = evaluate(spark.createDataFrame(recs, RECS_SCHEMA), spark.createDataFrame(test_rows, TEST_SCHEMA), k=k)
    expected = ranking_metrics_reference(spark, recs, labels, k)
    assert result["queries"] == expected["queries"]
    for name in ("precision", "recall", "map", "ndcg", "hit_rate"):
        assert result[name] == pytest.approx(expected[name], abs=1e-9), name


def test_hand_computed_query(spark):
    # labels {1, 2}; list [3, 1, 1, 2]: hits at positions 2, 3 (duplicate of 1) and 4, as RankingMetrics counts them.
    recs = spark.createDataFrame([(7, [(3, 1.0), (1, 0.9), (1, 0.8), (2, 0.7)])], RECS_SCHEMA)
    test = spark.createDataFrame([(7, 1), (7, 2)], TEST_SCHEMA)
    row = per_query_metrics(recs, test, k=4).first()
    assert row["precision"] == pytest.approx(3 / 4)
    assert row["recall"] == pytest.approx(3 / 2)
    assert row["map"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 2)
    dcg = 1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)
    assert row["ndcg"] == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    assert row["hit_rate"] == 1.0


def test_query_without_recommendations_scores_zero_and_is_counted(spark):
    recs = spark.createDataFrame([(1, [(5, 1.0)])], RECS_SCHEMA)
    test = spark.createDataFrame([(1, 5), (2, 6)], TEST_SCHEMA)
    result = evaluate(recs, test, k=10)
    assert result["queries"] == 2
    assert result["hit_rate"] == pytest.approx(0.5)
    assert result["recall"] == pytest.approx(0.5)


def test_coverage_counts_distinct_items_in_top_k(spark):
    recs = spark.createDataFrame([(1, [(1, 1.0), (2, 0.5), (3, 0.1)]), (2, [(2, 1.0), (4, 0.5)])], RECS_SCHEMA)
    test = spark.createDataFrame([(1, 1), (2, 2)], TEST_SCHEMA)
    catalog = spark.createDataFrame([(i,) for i in range(1, 9)], f"{ITEM_ID} long")
    assert evaluate(recs, test, k=2, catalog=catalog)["coverage"] == pytest.approx(3 / 8)


def test_bad_arguments(spark):
    recs = spark.createDataFrame([(1, [(1, 1.0)])], RECS_SCHEMA)
    test = spark.createDataFrame([(1, 1)], TEST_SCHEMA)
    with pytest.raises(InvalidParameterError, match="k must be a positive integer"):
        evaluate(recs, test, k=0)
    with pytest.raises(MalformedDataError, match="has no column"):
        evaluate(recs.withColumnRenamed(QUERY_ID, "qid"), test)
    with pytest.raises(EmptyDataError):
        evaluate(recs, test.limit(0))
