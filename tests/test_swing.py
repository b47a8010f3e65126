import itertools
from collections import defaultdict

import numpy as np
import pytest
import scipy.sparse as sp

import i2i_helpers
from i2i_helpers import assert_same_scores, interactions, neighbour_lists, neighbour_scores
from spark_retrieval.columns import ITEM_ID, USER_ID
from spark_retrieval.errors import EmptyDataError, InvalidParameterError
from spark_retrieval.models import swing as swing_module
from spark_retrieval.models.swing import Swing, swing_scores

NO_CAPS = {"max_users_per_item": None, "max_items_per_user": None}


def random_pairs(seed, users=22, items=15, events=200):
    return i2i_helpers.random_pairs(seed, users, items, events)


def brute_force_swing(pairs, alpha, user_alpha, user_beta, min_items=1, max_items=None, samples=None):
    """sim(i, j) = Σ_{u<v ∈ S_i, j ∈ I_u ∩ I_v} w_u w_v / (alpha + |I_u ∩ I_v|), w_u = (user_alpha + |I_u|)^-user_beta.

    S_i: the users of i within the item range, or ``samples[i]`` when given.
    """
    items_of = defaultdict(set)
    for user, item in pairs:
        items_of[user].add(item)
    items_of = {u: s for u, s in items_of.items() if len(s) >= min_items and (max_items is None or len(s) <= max_items)}
    users_of = defaultdict(set)
    for user, items in items_of.items():
        for item in items:
            users_of[item].add(user)
    weight = {u: (user_alpha + len(items)) ** -user_beta for u, items in items_of.items()}
    scores = defaultdict(dict)
    for i in users_of:
        chosen = sorted(samples[i] if samples else users_of[i])
        for j in users_of:
            if j == i:
                continue
            total, contributes = 0.0, False
            for u, v in itertools.combinations(chosen, 2):
                if j in items_of[u] and j in items_of[v]:
                    total += weight[u] * weight[v] / (alpha + len(items_of[u] & items_of[v]))
                    contributes = True
            if contributes:
                scores[i][j] = total
    return dict(scores)


def sample_by_xxhash64(spark, pairs, seed, size):
    """Each item's ``size`` users with the smallest xxhash64(seed, item, user): the documented sample."""
    return {item: set(users) for item, users in i2i_helpers.seeded_sample(spark, pairs, seed, ITEM_ID, USER_ID, size).items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_brute_force_with_square_root_weights_and_no_caps(spark, seed):
    pairs = random_pairs(seed)
    model = Swing(alpha=1.0, user_alpha=0.0, user_beta=0.5, k_neighbours=1000, **NO_CAPS).fit(interactions(spark, pairs))
    assert_same_scores(neighbour_scores(model), brute_force_swing(pairs, 1.0, 0.0, 0.5))


def default_user_weights():
    return Swing().getOrDefault("user_alpha"), Swing().getOrDefault("user_beta")


def test_equals_brute_force_with_default_weights_zero_alpha_and_a_user_range(spark):
    pairs = random_pairs(2)
    swing = Swing(alpha=0.0, min_items_per_user=4, max_items_per_user=11, max_users_per_item=None, k_neighbours=1000)
    model = swing.fit(interactions(spark, pairs))
    assert_same_scores(neighbour_scores(model), brute_force_swing(pairs, 0.0, *default_user_weights(), min_items=4, max_items=11))


def test_users_per_item_cap_is_the_seeded_xxhash64_sample(spark):
    pairs = random_pairs(3, users=30, items=10, events=260)
    train = interactions(spark, pairs)
    model = Swing(max_users_per_item=5, seed=11, k_neighbours=1000).fit(train)
    samples = sample_by_xxhash64(spark, pairs, 11, 5)
    assert_same_scores(neighbour_scores(model), brute_force_swing(pairs, Swing().getOrDefault("alpha"), *default_user_weights(), samples=samples))
    again = Swing(max_users_per_item=5, seed=11, k_neighbours=1000).fit(train.repartition(4))
    assert neighbour_lists(again) == neighbour_lists(model)
    other_seed = Swing(max_users_per_item=5, seed=12, k_neighbours=1000).fit(train)
    assert neighbour_lists(other_seed) != neighbour_lists(model)


def test_batches_and_blocks_do_not_change_the_scores(spark, monkeypatch):
    pairs = random_pairs(4)
    monkeypatch.setattr(swing_module, "item_block_count", lambda *args: 3)
    previous = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "3")
    try:
        model = Swing(alpha=1.0, user_alpha=0.0, user_beta=0.5, k_neighbours=1000, **NO_CAPS).fit(interactions(spark, pairs))
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", previous)
    assert model.metadata["item_blocks"] == 3
    assert_same_scores(neighbour_scores(model), brute_force_swing(pairs, 1.0, 0.0, 0.5))


def test_dense_and_sparse_products_agree(monkeypatch):
    rng = np.random.default_rng(5)
    lists = sp.csr_matrix((rng.random((12, 30)) < 0.3).astype(float))
    weights = rng.random(12)
    dense_columns, dense_scores = swing_scores(lists, weights, 1.0)
    monkeypatch.setattr(swing_module, "DENSE_MAX_CELLS", 0)
    sparse_columns, sparse_scores = swing_scores(lists, weights, 1.0)
    np.testing.assert_array_equal(dense_columns, sparse_columns)
    np.testing.assert_allclose(dense_scores, sparse_scores, rtol=0, atol=1e-12)


def test_neighbours_by_score_then_smaller_id(spark):
    # Users 1 and 2 share {1, 2, 3}; users 3 and 4 share {1, 4, 5}, user 3 being more active (smaller weight).
    pairs = [(1, 3), (1, 1), (1, 2), (2, 2), (2, 1), (2, 3), (3, 5), (3, 4), (3, 1), (3, 6), (4, 1), (4, 4), (4, 5)]
    train = interactions(spark, pairs)
    assert [n for n, _ in neighbour_lists(Swing().fit(train))[1]] == [2, 3, 4, 5]
    assert [n for n, _ in neighbour_lists(Swing(k_neighbours=3).fit(train))[1]] == [2, 3, 4]
    for item, entries in neighbour_lists(Swing().fit(train)).items():
        assert item not in [n for n, _ in entries]


def test_same_seed_gives_identical_tables(spark):
    train = interactions(spark, random_pairs(5, users=30, items=10, events=260))
    first = Swing(max_users_per_item=6, k_neighbours=4, seed=2).fit(train)
    second = Swing(max_users_per_item=6, k_neighbours=4, seed=2).fit(train.repartition(3))
    assert neighbour_lists(first) == neighbour_lists(second)


def test_empty_train_or_no_user_in_range_raises(spark):
    with pytest.raises(EmptyDataError):
        Swing().fit(interactions(spark, []))
    with pytest.raises(EmptyDataError):
        Swing(min_items_per_user=50).fit(interactions(spark, random_pairs(6)))


@pytest.mark.parametrize(
    "params",
    [
        {"alpha": -1.0},
        {"alpha": float("nan")},
        {"user_alpha": -0.5},
        {"user_beta": -0.35},
        {"user_beta": "0.3"},
        {"max_users_per_item": 0},
        {"min_items_per_user": 0},
        {"min_items_per_user": 5, "max_items_per_user": 4},
        {"k_neighbours": 0},
        {"k_neighbours": -1},
        {"seed": 0.5},
    ],
)
def test_invalid_parameters_are_rejected_at_construction(params):
    with pytest.raises(InvalidParameterError):
        Swing(**params)
