"""The contract every registered model keeps, one parametrized suite for all of them.

fit → recommend (one list per query, at most k entries, score descending then smaller item id, no
duplicates, no train item when seen items are excluded, never the trigger item for item-to-item models),
save/load (same class, params and lists), unknown ids (an empty list, or the popularity list for Global
Hot), bad input (unknown parameters, values of the wrong type, empty or column-less train), determinism
(same seed → identical lists, scores included) and ``pyspark.ml`` Params semantics (only the given
parameters are set, ``copy(extra)``, ``fit(train, params)``, a ``Pipeline`` stage).
"""

from collections import defaultdict

import numpy as np
import pytest
from pyspark.ml import Pipeline

from spark_retrieval.columns import ITEM_ID, LAST_ITEM, QUERY_ID, RECENT_ITEMS, RECOMMENDATIONS, SCORE, USER_ID
from spark_retrieval.data.split import temporal_split
from spark_retrieval.errors import EmptyDataError, InvalidParameterError, MalformedDataError
from spark_retrieval.models.base import RetrievalModel
from spark_retrieval.models.item_to_item import ItemToItemModel
from spark_retrieval.models.multi_channel import MultiChannelModel
from spark_retrieval.models.registry import MODELS, build_estimator
from spark_retrieval.retrieval.merge import PROVENANCE

K = 5
NUM_USERS, NUM_ITEMS, EVENTS_PER_USER = 40, 30, 12
TWO_TOWER_SMALL = {"backend": "local", "epochs": 1, "embedding_dim": 8, "batch_size": 32, "shuffle_buffer": 256}
# Small, fast settings per row: the contract is about shapes and behaviour, not quality (test_quality.py).
SMALL = {
    "global_hot": {},
    "item_cf": {"k_neighbours": 10},
    "swing": {"k_neighbours": 10},
    "als": {"rank": 4, "max_iter": 2, "num_blocks": 2},
    "als_seed_preset": {"rank": 4, "max_iter": 2, "num_blocks": 2},
    "dssm_bce_neg10": {**TWO_TOWER_SMALL, "hidden_dims": [16, 8], "num_negatives": 4},
    "dssm_bce_neg100": {**TWO_TOWER_SMALL, "hidden_dims": [16, 8], "num_negatives": 4},
    "dssm_softmax": {**TWO_TOWER_SMALL, "hidden_dims": [16, 8]},
    "simplex_ccl": {**TWO_TOWER_SMALL, "num_negatives": 4},
    "multi_channel_quota": {
        "channels": ["item_cf", "als", "global_hot"],
        "shares": [2, 2, 1],
        "channel_params": {"item_cf": {"k_neighbours": 10}, "als": {"rank": 4, "max_iter": 2, "num_blocks": 2}},
    },
    "multi_channel_rrf": {
        "channels": ["swing", "global_hot"],
        "weights": [2.0, 1.0],
        "channel_params": {"swing": {"k_neighbours": 10}},
    },
}
NAMES = list(MODELS)


def test_every_registered_model_has_small_settings_here():
    assert set(SMALL) == set(MODELS)


@pytest.fixture(scope="module")
def split(spark):
    """Users with a taste (items near their own id) plus noise; ratings 1–5; 12 events each."""
    rng = np.random.default_rng(3)
    rows = []
    for user in range(NUM_USERS):
        items = rng.choice(NUM_ITEMS, size=EVENTS_PER_USER, replace=False, p=taste(user))
        rows += [(user, int(item) + 100, float(rng.integers(1, 6)), t) for t, item in enumerate(items)]
    ratings = spark.createDataFrame(rows, "user_id long, item_id long, rating double, timestamp long")
    result = temporal_split(ratings, holdout=3, positive_threshold=2.0)
    return result.train.cache(), result.test.cache()


def taste(user):
    weights = np.exp(-np.abs(np.arange(NUM_ITEMS) - (user * NUM_ITEMS // NUM_USERS)) / 4.0) + 0.05
    return weights / weights.sum()


@pytest.fixture(scope="module")
def fitted(split):
    """Each model fitted once (lazily, on first use) and shared by the tests below."""
    models = {}

    def get(name):
        if name not in models:
            models[name] = build_estimator(name, seed=1, params=SMALL[name]).fit(split[0])
        return models[name]

    return get


@pytest.fixture(scope="module")
def recommended(split, fitted):
    """Each fitted model's recommendations for the test queries: (columns, collected rows), computed once (lazily)
    and shared by the tests that compare other lists with them."""
    found = {}

    def get(name):
        if name not in found:
            recommendations = fitted(name).recommend(split[1], K)
            found[name] = (recommendations.columns, recommendations.collect())
        return found[name]

    return get


def as_lists(rows):
    return {r[QUERY_ID]: [(e[ITEM_ID], e[SCORE]) for e in r[RECOMMENDATIONS]] for r in rows}


def lists(recommendations):
    return as_lists(recommendations.collect())


def seen_items(train):
    seen = defaultdict(set)
    for row in train.select(USER_ID, ITEM_ID).collect():
        seen[row[USER_ID]].add(row[ITEM_ID])
    return seen


@pytest.mark.parametrize("name", NAMES)
def test_recommendations_have_the_contracted_shape_and_order(name, split, fitted, recommended):
    train, test = split
    model = fitted(name)
    columns, rows = recommended(name)  # model.recommend(test, K): its columns and every row it holds
    assert columns == [QUERY_ID, RECOMMENDATIONS] + ([PROVENANCE] if isinstance(model, MultiChannelModel) else [])
    got = as_lists(rows)
    queries = {r[QUERY_ID]: r for r in test.collect()}
    assert set(got) == set(queries) and len(rows) == len(queries)  # one row per query, none repeated
    seen = seen_items(train)
    excludes_seen = model.hasParam("exclude_seen") and model.get("exclude_seen")
    for query_id, entries in got.items():
        items = [item for item, _ in entries]
        assert len(items) <= K and len(set(items)) == len(items)
        assert entries == sorted(entries, key=lambda e: (-e[1], e[0])), f"{name}: not score desc, item asc"
        if excludes_seen:
            assert not set(items) & seen[queries[query_id][USER_ID]]
        if isinstance(model, ItemToItemModel):
            assert queries[query_id][LAST_ITEM] not in items
    assert sum(len(entries) for entries in got.values()) > 0


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_give_the_same_model(name, split, fitted, recommended, tmp_path):
    model = fitted(name)
    model.save(str(tmp_path / name))
    loaded = RetrievalModel.load(str(tmp_path / name))
    assert type(loaded) is type(model)
    assert loaded.params_dict() == model.params_dict()
    assert lists(loaded.recommend(split[1], K)) == as_lists(recommended(name)[1])  # the saved model's own lists


@pytest.mark.parametrize("name", NAMES)
def test_unknown_users_and_items_get_a_list_not_an_error(name, spark, fitted):
    model = fitted(name)
    queries = spark.createDataFrame(
        [(1, 999_999, 999_998, [999_998]), (2, 999_997, None, [])],
        f"{QUERY_ID} long, {USER_ID} long, {LAST_ITEM} long, {RECENT_ITEMS} array<long>",
    )
    got = lists(model.recommend(queries, K))
    assert set(got) == {1, 2}
    if name == "global_hot" or "two_tower" in MODELS[name].estimator or name.startswith("multi_channel"):
        assert all(len(entries) == K for entries in got.values())  # popularity / a context-only user vector
    else:
        assert got == {1: [], 2: []}


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_identical_lists(name, split, recommended):
    again = build_estimator(name, seed=1, params=SMALL[name]).fit(split[0])  # the settings `fitted` uses
    assert lists(again.recommend(split[1], K)) == as_lists(recommended(name)[1])


@pytest.mark.parametrize("name", NAMES)
def test_bad_parameters_and_bad_train_fail_with_user_errors(name, split):
    estimator = build_estimator(name, params=SMALL[name])
    cls = type(estimator)
    with pytest.raises(InvalidParameterError, match="unknown parameter 'no_such_param'"):
        cls(no_such_param=1)
    for param in estimator.params:
        default = estimator.getOrDefault(param) if estimator.hasDefault(param) else None
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            with pytest.raises(InvalidParameterError, match=param.name):
                cls(**{param.name: "many"})
    with pytest.raises(EmptyDataError):
        estimator.fit(split[0].limit(0))
    with pytest.raises(MalformedDataError, match="has no column 'item_id'"):
        estimator.fit(split[0].drop(ITEM_ID))


@pytest.mark.parametrize("name", ["item_cf", "swing", "als", "dssm_softmax", "simplex_ccl"])
def test_params_follow_pyspark_ml(name, split):
    cls = MODELS[name].estimator_class()
    defaults = cls()
    first = next(p for p in defaults.params if isinstance(defaults.getOrDefault(p), int) and p.name != "seed")
    value = defaults.getOrDefault(first) + 1
    estimator = cls(**{first.name: value})
    assert estimator.isSet(first.name) and not any(estimator.isSet(p) for p in estimator.params if p.name != first.name)
    assert f"current: {value}" in estimator.explainParams()
    copied = estimator.copy({estimator.getParam(first.name): value + 1})
    assert copied.get(first.name) == value + 1 and estimator.get(first.name) == value
    assert estimator.extractParamMap()[estimator.getParam(first.name)] == value
    with pytest.raises(InvalidParameterError):
        estimator.copy({estimator.getParam(first.name): "many"})


@pytest.mark.parametrize("name", ["global_hot", "item_cf", "dssm_softmax"])
def test_an_estimator_is_a_pipeline_stage(name, split, recommended):
    train, test = split
    estimator = build_estimator(name, seed=1, params=SMALL[name])  # the estimator `fitted(name)` fitted directly
    pipeline_model = Pipeline(stages=[estimator]).fit(train)
    (model,) = pipeline_model.stages
    assert isinstance(model, RetrievalModel)
    assert all(model.get(p.name) == value for p, value in estimator.extractParamMap().items() if model.hasParam(p.name))
    assert lists(model.recommend(test, K)) == as_lists(recommended(name)[1])
