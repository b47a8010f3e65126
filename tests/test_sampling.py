import numpy as np
import pytest
from scipy.stats import chisquare

from spark_retrieval.columns import ITEM_ID, LAST_ITEM, USER_ID
from spark_retrieval.data.sampling import NEGATIVE_ITEMS, sample_negative_items, sample_negatives, uniform
from spark_retrieval.errors import EmptyDataError, InvalidParameterError, MalformedDataError

SCHEMA = f"{USER_ID} long, {ITEM_ID} long, {LAST_ITEM} long"


@pytest.fixture(scope="module")
def examples(spark):
    # 30 users, each with 8 positives among 20 items (a dense catalog: rejections happen all the time).
    rng = np.random.default_rng(3)
    rows = []
    for user in range(30):
        items = rng.choice(20, size=8, replace=False)
        rows += [(user, int(item), int(previous)) for item, previous in zip(items, np.roll(items, 1))]
    return spark.createDataFrame(rows, SCHEMA)


def negatives_by_row(df):
    return {(r[USER_ID], r[ITEM_ID], r[LAST_ITEM]): list(r[NEGATIVE_ITEMS]) for r in df.collect()}


def test_never_returns_a_positive_of_the_user(examples):
    positives = {}
    for row in examples.collect():
        positives.setdefault(row[USER_ID], set()).add(row[ITEM_ID])
    sampled = negatives_by_row(sample_negative_items(examples, 25, alpha=0.75, seed=1))
    assert len(sampled) == examples.count()
    for (user, _, _), negatives in sampled.items():
        assert len(negatives) == 25
        assert not positives[user] & set(negatives)
        assert set(negatives) <= set(range(20))


def test_same_seed_same_negatives_whatever_the_partitioning(examples):
    first = negatives_by_row(sample_negative_items(examples, 5, seed=7))
    again = negatives_by_row(sample_negative_items(examples.repartition(7), 5, seed=7))
    other = negatives_by_row(sample_negative_items(examples, 5, seed=8))
    assert first == again
    assert first != other


def test_follows_the_alpha_law(spark):
    # Every user's only positive (item 999) is outside the distribution, so draws follow count ** alpha.
    counts = {item: item * item for item in range(1, 11)}
    item_counts = spark.createDataFrame(list(counts.items()), f"{ITEM_ID} long, count long")
    examples = spark.createDataFrame([(user, 999, 0) for user in range(2000)], SCHEMA)
    for alpha in (0.75, 0.0):
        drawn = sample_negatives(examples, 20, alpha=alpha, seed=11, item_counts=item_counts)
        observed = {r[ITEM_ID]: r["count"] for r in drawn.groupBy(ITEM_ID).count().collect()}
        weights = np.array([counts[i] ** alpha for i in sorted(counts)], dtype=float)
        expected = weights / weights.sum() * 40_000
        assert chisquare([observed.get(i, 0) for i in sorted(counts)], expected).pvalue > 1e-3


def test_long_form_keeps_the_context_of_each_positive(spark):
    examples = spark.createDataFrame([(1, 5, 4), (2, 6, 3)], SCHEMA)
    long_form = sample_negatives(examples, 3, seed=0, item_counts=spark.createDataFrame([(i, 1) for i in range(10)], f"{ITEM_ID} long, count long"))
    rows = long_form.collect()
    assert long_form.columns == examples.columns
    assert sorted((r[USER_ID], r[LAST_ITEM]) for r in rows) == [(1, 4)] * 3 + [(2, 3)] * 3
    assert all(r[ITEM_ID] not in (5 if r[USER_ID] == 1 else 6,) for r in rows)


def test_a_user_owning_every_item_gets_no_negatives(spark):
    examples = spark.createDataFrame([(1, 1, 0), (1, 2, 1), (2, 1, 0)], SCHEMA)
    sampled = {r[USER_ID]: r[NEGATIVE_ITEMS] for r in sample_negative_items(examples, 4, seed=0).collect()}
    assert sampled[1] == []
    assert sampled[2] == [2, 2, 2, 2]


def test_uniforms_are_a_pure_function_of_seed_key_and_counter():
    keys = np.arange(1000, dtype=np.uint64)
    counters = np.zeros(1000, dtype=np.uint64)
    u = uniform(5, keys, counters)
    assert ((u >= 0) & (u < 1)).all()
    assert np.array_equal(u[::-1], uniform(5, keys[::-1], counters))
    assert not np.array_equal(u, uniform(6, keys, counters))
    assert abs(u.mean() - 0.5) < 0.05


def test_bad_arguments(spark, examples):
    with pytest.raises(InvalidParameterError, match="num_negatives"):
        sample_negative_items(examples, 0)
    with pytest.raises(InvalidParameterError, match="alpha"):
        sample_negative_items(examples, 2, alpha=-1)
    with pytest.raises(MalformedDataError, match=USER_ID):
        sample_negative_items(examples.drop(USER_ID), 2)
    with pytest.raises(EmptyDataError):
        sample_negative_items(examples, 2, item_counts=spark.createDataFrame([], f"{ITEM_ID} long, count long"))
