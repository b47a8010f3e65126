import itertools
import math
from collections import Counter, defaultdict

import numpy as np
import pytest

import i2i_helpers
from i2i_helpers import assert_same_scores, interactions, neighbour_lists, neighbour_scores
from spark_retrieval.columns import ITEM_ID, LAST_ITEM, QUERY_ID, RECOMMENDATIONS, USER_ID
from spark_retrieval.data.synthetic import synthetic_interactions
from spark_retrieval.errors import InvalidParameterError
from spark_retrieval.models import item_cf
from spark_retrieval.models.item_cf import ItemCF



def random_pairs(seed, users=25, items=18, events=220):
    return i2i_helpers.random_pairs(seed, users, items, events)


def brute_force_item_cf(pairs, min_cooccurrence=1, shrinkage=None):
    """sim(i, j) = Σ_{u ∈ U_i ∩ U_j} w_u² / (‖i‖·‖j‖ + shrinkage), w_u² = 1/|I_u|, for every pair with enough shared
    users; ``shrinkage`` None is the estimator's default."""
    if shrinkage is None:
        shrinkage = ItemCF().getOrDefault("shrinkage")
    items_of, users_of = defaultdict(set), defaultdict(set)
    for user, item in pairs:
        items_of[user].add(item)
        users_of[item].add(user)
    weight = {user: 1.0 / len(items) for user, items in items_of.items()}
    norm = {item: math.sqrt(sum(weight[u] for u in users)) for item, users in users_of.items()}
    scores = defaultdict(dict)
    for i, j in itertools.permutations(users_of, 2):
        shared = users_of[i] & users_of[j]
        if shared and len(shared) >= min_cooccurrence:
            scores[i][j] = sum(weight[u] for u in shared) / (norm[i] * norm[j] + shrinkage)
    return dict(scores)


def sample_by_xxhash64(spark, pairs, seed, size):
    """Each user's ``size`` items with the smallest xxhash64(seed, user, item): the documented sample."""
    sample = i2i_helpers.seeded_sample(spark, pairs, seed, USER_ID, ITEM_ID, size)
    return [(user, item) for user, items in sample.items() for item in items]


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_brute_force_on_every_pair(spark, seed):
    pairs = random_pairs(seed)
    model = ItemCF(k_neighbours=1000).fit(interactions(spark, pairs))
    assert_same_scores(neighbour_scores(model), brute_force_item_cf(pairs))


@pytest.mark.parametrize("min_cooccurrence", [2, 3])
def test_min_cooccurrence_drops_pairs_with_fewer_users(spark, min_cooccurrence):
    pairs = random_pairs(2)
    model = ItemCF(k_neighbours=1000, min_cooccurrence=min_cooccurrence).fit(interactions(spark, pairs))
    assert_same_scores(neighbour_scores(model), brute_force_item_cf(pairs, min_cooccurrence))


@pytest.mark.parametrize("shrinkage, min_cooccurrence", [(0.5, 1), (3.0, 2)])
def test_shrinkage_divides_by_the_norms_plus_shrinkage(spark, shrinkage, min_cooccurrence):
    pairs = random_pairs(4)
    model = ItemCF(k_neighbours=1000, shrinkage=shrinkage, min_cooccurrence=min_cooccurrence).fit(interactions(spark, pairs))
    assert_same_scores(neighbour_scores(model), brute_force_item_cf(pairs, min_cooccurrence, shrinkage))


def test_zero_shrinkage_is_the_plain_cosine(spark):
    pairs = random_pairs(6)
    model = ItemCF(k_neighbours=1000, shrinkage=0.0).fit(interactions(spark, pairs))
    assert_same_scores(neighbour_scores(model), brute_force_item_cf(pairs, shrinkage=0.0))


def test_batches_and_blocks_do_not_change_the_scores(spark, monkeypatch):
    pairs = random_pairs(3)
    monkeypatch.setattr(item_cf, "item_block_count", lambda *args: 5)
    previous = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "4")
    try:
        model = ItemCF(k_neighbours=1000, min_cooccurrence=2).fit(interactions(spark, pairs))
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", previous)
    assert model.metadata["item_blocks"] == 5
    assert_same_scores(neighbour_scores(model), brute_force_item_cf(pairs, 2))


def test_neighbours_by_score_then_smaller_id_and_never_itself(spark):
    # Item 10: 20 and 30 tie (same users), then 40, 50, 60 tie (one user with four items).
    pairs = [(1, 10), (1, 30), (1, 20), (2, 10), (2, 20), (2, 30), (3, 60), (3, 10), (3, 50), (3, 40)]
    train = interactions(spark, pairs)
    assert [n for n, _ in neighbour_lists(ItemCF().fit(train))[10]] == [20, 30, 40, 50, 60]
    assert [n for n, _ in neighbour_lists(ItemCF(k_neighbours=4).fit(train))[10]] == [20, 30, 40, 50]
    for item, entries in neighbour_lists(ItemCF().fit(train)).items():
        assert item not in [n for n, _ in entries]
        assert [s for _, s in entries] == sorted((s for _, s in entries), reverse=True)


def test_user_cap_is_the_seeded_xxhash64_sample(spark):
    rng = np.random.default_rng(4)
    pairs = [(user, int(item)) for user in range(1, 16) for item in rng.choice(40, size=rng.integers(3, 12), replace=False)]
    train = interactions(spark, pairs)
    model = ItemCF(k_neighbours=1000, max_items_per_user=4, seed=7).fit(train)
    assert_same_scores(neighbour_scores(model), brute_force_item_cf(sample_by_xxhash64(spark, pairs, 7, 4)))
    again = ItemCF(k_neighbours=1000, max_items_per_user=4, seed=7).fit(train.repartition(5))
    assert neighbour_lists(again) == neighbour_lists(model)
    other_seed = ItemCF(k_neighbours=1000, max_items_per_user=4, seed=8).fit(train)
    assert neighbour_lists(other_seed) != neighbour_lists(model)


def test_same_seed_gives_identical_tables(spark):
    train = interactions(spark, random_pairs(5))
    first = ItemCF(k_neighbours=5, max_items_per_user=6, seed=3).fit(train)
    second = ItemCF(k_neighbours=5, max_items_per_user=6, seed=3).fit(train.repartition(3))
    assert neighbour_lists(first) == neighbour_lists(second)


@pytest.mark.parametrize(
    "params",
    [
        {"k_neighbours": 0},
        {"k_neighbours": -3},
        {"k_neighbours": 2.5},
        {"k_neighbours": True},
        {"max_items_per_user": 0},
        {"max_items_per_user": "10"},
        {"min_cooccurrence": 0},
        {"shrinkage": -1.0},
        {"shrinkage": "1"},
        {"seed": 1.5},
    ],
)
def test_invalid_parameters_are_rejected_at_construction(params):
    with pytest.raises(InvalidParameterError):
        ItemCF(**params)


def test_unknown_or_null_last_item_gets_an_empty_list(spark, monkeypatch):
    monkeypatch.setattr(item_cf, "item_block_count", lambda *args: 6)  # more blocks than items: empty partitions
    model = ItemCF().fit(interactions(spark, [(1, 1), (1, 2), (2, 1), (2, 3)]))
    queries = spark.createDataFrame([(1, 1), (2, 999), (3, None)], f"{QUERY_ID} long, {LAST_ITEM} long")
    recs = {r[QUERY_ID]: [e[ITEM_ID] for e in r[RECOMMENDATIONS]] for r in model.recommend(queries, 5).collect()}
    assert recs == {1: [2, 3], 2: [], 3: []}


def test_on_synthetic_power_law_data(spark):
    data = synthetic_interactions(spark, num_users=60, num_items=80, num_interactions=2400, seed=3)
    rows = sorted(data.collect())
    assert rows == sorted(synthetic_interactions(spark, 60, 80, 2400, seed=3).collect())
    assert rows != sorted(synthetic_interactions(spark, 60, 80, 2400, seed=4).collect())
    events_per_user = Counter(row[USER_ID] for row in rows)
    assert len(events_per_user) == 60 and min(events_per_user.values()) >= 20
    assert len({(row[USER_ID], row[ITEM_ID]) for row in rows}) == len(rows)
    assert {row["rating"] for row in rows} <= {1.0, 2.0, 3.0, 4.0, 5.0}
    with pytest.raises(InvalidParameterError):
        synthetic_interactions(spark, num_users=60, num_items=80, num_interactions=100)
    model = ItemCF(k_neighbours=1000).fit(data)
    assert_same_scores(neighbour_scores(model), brute_force_item_cf([(row[USER_ID], row[ITEM_ID]) for row in rows]))
