from spark_retrieval.columns import ITEM_ID, QUERY_ID, RECOMMENDATIONS, SCORE
from spark_retrieval.models import GlobalHot, RetrievalModel

import pytest

SCHEMA = "user_id long, item_id long, rating double, timestamp long"


def lists(recs):
    return {r[QUERY_ID]: [(e[ITEM_ID], e[SCORE]) for e in r[RECOMMENDATIONS]] for r in recs.collect()}


@pytest.fixture
def train(spark):
    # item 5: 3 events, items 7 and 2: 2 events each (tie → smaller id first), item 9: 1 event
    events = [(1, 5), (2, 5), (3, 5), (1, 7), (2, 7), (3, 2), (4, 2), (4, 9)]
    return spark.createDataFrame([(u, i, 4.0, n) for n, (u, i) in enumerate(events)], SCHEMA)


def test_most_frequent_items_ties_by_smaller_id(spark, train):
    queries = spark.createDataFrame([(10,), (11,)], f"{QUERY_ID} long")
    recs = lists(GlobalHot().fit(train).recommend(queries, 3))
    assert recs == {10: [(5, 3.0), (2, 2.0), (7, 2.0)], 11: [(5, 3.0), (2, 2.0), (7, 2.0)]}


def test_k_larger_than_catalog(spark, train):
    queries = spark.createDataFrame([(1,)], f"{QUERY_ID} long")
    assert [i for i, _ in lists(GlobalHot().fit(train).recommend(queries, 50))[1]] == [5, 2, 7, 9]


def test_load_missing_model(spark, tmp_path):
    with pytest.raises(Exception, match="no saved model"):
        RetrievalModel.load(str(tmp_path / "nothing"))
