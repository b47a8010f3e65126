import pytest

from spark_retrieval.columns import ITEM_ID, LAST_ITEM, QUERY_ID, RECENT_ITEMS, USER_ID
from spark_retrieval.data.split import temporal_split
from spark_retrieval.errors import InvalidParameterError

SCHEMA = "user_id long, item_id long, rating double, timestamp long"


def rows_by(df, key):
    return {row[key]: row for row in df.collect()}


def test_holdout_threshold_and_context(spark):
    # user 1: six events, the last three held out; one of them rated below the threshold.
    events = [(1, 10, 5.0, 100), (1, 11, 4.0, 101), (1, 12, 3.0, 102), (1, 13, 5.0, 103), (1, 14, 1.0, 104), (1, 15, 4.0, 105)]
    split = temporal_split(spark.createDataFrame(events, SCHEMA), holdout=3, positive_threshold=2.0)
    assert sorted(r[ITEM_ID] for r in split.train.collect()) == [10, 11, 12]
    test = rows_by(split.test, ITEM_ID)
    assert sorted(test) == [13, 15]
    assert test[13][LAST_ITEM] == 12 and test[13][RECENT_ITEMS] == [10, 11, 12]
    # a held-out event's context may include another held-out event (next-item protocol)
    assert test[15][LAST_ITEM] == 14 and test[15][RECENT_ITEMS] == [10, 11, 12, 13, 14]
    assert test[13][QUERY_ID] == 1 * 3 + 0 and test[15][QUERY_ID] == 1 * 3 + 2
    counts = split.counts()
    assert counts == {"users": 1, "short_users": 0, "train_events": 3, "held_out_events": 3, "test_queries": 2, "train_items": 3,
                      "duplicate_events": 0}


def test_timestamp_ties_broken_by_item_id(spark):
    events = [(2, 30, 5.0, 7), (2, 20, 5.0, 7), (2, 10, 5.0, 7), (2, 40, 5.0, 7)]
    split = temporal_split(spark.createDataFrame(events, SCHEMA), holdout=1)
    assert [r[ITEM_ID] for r in split.test.collect()] == [40]
    assert split.test.first()[RECENT_ITEMS] == [10, 20, 30]


def test_recent_items_capped_at_history(spark):
    events = [(3, i, 5.0, i) for i in range(1, 16)]
    split = temporal_split(spark.createDataFrame(events, SCHEMA), holdout=1, history=10)
    assert split.test.first()[RECENT_ITEMS] == list(range(5, 15))


def test_short_users_give_no_queries_and_stay_in_train(spark):
    events = [(4, 1, 5.0, 1), (4, 2, 5.0, 2), (4, 3, 5.0, 3), (5, 1, 5.0, 1), (5, 2, 5.0, 2), (5, 3, 5.0, 3), (5, 4, 5.0, 4)]
    split = temporal_split(spark.createDataFrame(events, SCHEMA), holdout=3)
    assert {r[USER_ID] for r in split.test.collect()} == {5}
    assert split.counts()["short_users"] == 1
    assert sorted((r[USER_ID], r[ITEM_ID]) for r in split.train.collect()) == [(4, 1), (4, 2), (4, 3), (5, 1)]


def test_first_event_has_no_context(spark):
    events = [(6, 9, 5.0, 1), (6, 8, 5.0, 2)]
    split = temporal_split(spark.createDataFrame(events, SCHEMA), holdout=1)
    from spark_retrieval.data.context import with_sequence_context

    first = with_sequence_context(spark.createDataFrame(events, SCHEMA)).orderBy("timestamp").first()
    assert first[LAST_ITEM] is None and first[RECENT_ITEMS] == []
    assert split.test.first()[LAST_ITEM] == 9


@pytest.mark.parametrize("kwargs", [{"holdout": 0}, {"holdout": "3"}, {"positive_threshold": "high"}, {"history": 0}])
def test_bad_parameters(spark, kwargs):
    with pytest.raises(InvalidParameterError):
        temporal_split(spark.createDataFrame([(1, 1, 1.0, 1)], SCHEMA), **kwargs)
