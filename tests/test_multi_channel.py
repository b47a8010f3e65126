"""``MultiChannel``: its fit merges exactly what its channels recommend on their own, a damaged save is named,
merging runs no Spark job until asked (nothing is collected), bad settings are one clear error.
Shape, order, save/load, determinism and Params semantics are in the shared model contract."""

import shutil

import pytest

from spark_retrieval.columns import ITEM_ID, QUERY_ID, RECOMMENDATIONS
from spark_retrieval.data.split import temporal_split
from spark_retrieval.errors import InvalidParameterError, MalformedDataError
from spark_retrieval.models.base import RetrievalModel
from spark_retrieval.models.multi_channel import MultiChannel, MultiChannelModel
from spark_retrieval.models.registry import build_estimator
from spark_retrieval.retrieval.merge import PROVENANCE, merge_lists

K = 4
ITEM_CF = {"k_neighbours": 8}


@pytest.fixture(scope="module")
def split(spark):
    rows = [(u, 10 + (u * 3 + t * (1 + u % 4)) % 17, float(1 + (u + t) % 5), t) for u in range(24) for t in range(9)]
    ratings = spark.createDataFrame(rows, "user_id long, item_id long, rating double, timestamp long")
    result = temporal_split(ratings, holdout=2, positive_threshold=2.0)
    return result.train.cache(), result.test.cache()


@pytest.fixture(scope="module")
def fitted(split):
    train, _ = split
    return MultiChannel(
        channels=["item_cf", "global_hot"], strategy="quota", quotas=[3, 1], channel_params={"item_cf": ITEM_CF}
    ).fit(train)


def rows(frame):
    return sorted((r[QUERY_ID], [e[ITEM_ID] for e in r[RECOMMENDATIONS]]) for r in frame.collect())


def test_the_merge_of_a_fit_is_the_merge_of_its_channels_fitted_alone(split, fitted):
    train, test = split
    alone = {
        "item_cf": build_estimator("item_cf", params=ITEM_CF).fit(train).recommend(test, K),
        "global_hot": build_estimator("global_hot").fit(train).recommend(test, K),
    }
    expected = merge_lists(alone, K, "quota", quotas=[3, 1])
    got = fitted.recommend(test, K)
    assert got.columns == [QUERY_ID, RECOMMENDATIONS, PROVENANCE]
    assert rows(got) == rows(expected)
    assert rows(MultiChannelModel.from_models(fitted.channel_models, strategy="quota", quotas=[3, 1]).recommend(test, K)) == rows(got)


def test_shares_give_quotas_for_any_k(split, fitted):
    _, test = split
    model = MultiChannelModel.from_models(fitted.channel_models, strategy="quota", shares=[3, 1])
    assert model.quotas_for(4) == [3, 1] and model.quotas_for(10) == [8, 2]
    equal = MultiChannelModel.from_models(fitted.channel_models, strategy="quota")
    assert equal.quotas_for(5) == [3, 2] and MultiChannelModel.from_models(fitted.channel_models).quotas_for(5) is None
    assert all(len(items) == 10 for _, items in rows(model.recommend(test, 10)))


def test_merging_runs_no_spark_job_until_the_lists_are_read(spark, split, fitted):
    _, test = split
    tracker = spark.sparkContext.statusTracker()
    spark.sparkContext.setJobGroup("merge-is-lazy", "building the merged lists")
    try:
        fitted.recommend(test, K)
        MultiChannelModel.from_models(fitted.channel_models, strategy="rrf").recommend(test, K)
        assert tracker.getJobIdsForGroup("merge-is-lazy") == []
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)


def test_a_saved_model_missing_a_channel_is_named(split, fitted, tmp_path):
    path = str(tmp_path / "merged")
    fitted.save(path)
    assert rows(RetrievalModel.load(path).recommend(split[1], K)) == rows(fitted.recommend(split[1], K))
    shutil.rmtree(tmp_path / "merged" / "channels" / "global_hot")
    with pytest.raises(MalformedDataError, match="channel 'global_hot' is missing"):
        RetrievalModel.load(path)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"channels": ["item_cf", "no_such_model"]}, "unknown channel 'no_such_model'"),
        ({"channels": ["item_cf", "multi_channel_rrf"]}, "'multi_channel_rrf' is itself a multi-channel row"),
        ({"channels": ["item_cf", "item_cf"]}, "channels must be distinct"),
        ({"channels": ["item_cf", "als"], "quotas": [1, 1], "shares": [1, 1]}, "quotas or shares, not both"),
        ({"channels": ["item_cf", "als"], "weights": [1.0]}, "1 weights for 2 channels"),
        ({"channels": ["item_cf", "als"], "weights": [1.0, -2.0]}, "weights must be a number >= 0"),
        ({"channels": ["item_cf", "als"], "weights": [0, 0]}, "at least one weight must be > 0"),
        ({"channels": ["item_cf"], "channel_params": {"swing": {}}}, "channel_params names channels not merged: swing"),
        ({"channels": ["item_cf"], "strategy": "best"}, "strategy must be one of quota, rrf, round_robin"),
    ],
)
def test_bad_settings_fail_where_they_are_given(params, message):
    with pytest.raises(InvalidParameterError, match=message):
        MultiChannel(**params)


def test_quotas_that_do_not_sum_to_k_fail_at_recommend(split, fitted):
    with pytest.raises(InvalidParameterError, match=r"quotas must sum to k = 5, got \[3, 1\]"):
        fitted.recommend(split[1], 5)


def test_without_channels_fit_says_so(split):
    with pytest.raises(InvalidParameterError, match="channels must be set"):
        MultiChannel().fit(split[0])


def test_a_merged_row_tunes_its_merge_on_validation_over_the_best_tuned_row_of_each_family(spark, monkeypatch):
    from spark_retrieval.benchmark import run_benchmark
    from spark_retrieval.data.synthetic import synthetic_interactions
    from spark_retrieval.models.item_cf import ItemCF
    from spark_retrieval.models.registry import MODELS, RegisteredModel
    from spark_retrieval.models.swing import Swing
    from spark_retrieval.tuning import search_space, tune

    merged = RegisteredModel(
        "rrf_small", "spark_retrieval.models.multi_channel:MultiChannel", {"channels": ["item_cf", "global_hot"]},
        in_all=False, family="merged",
    )
    monkeypatch.setitem(MODELS, "rrf_small", merged)
    space = search_space("rrf_small")
    assert set(space) == {"weights", "rrf_k"} and space["weights"].length == 2  # one weight per channel
    fits = []
    for cls in (ItemCF, Swing):
        monkeypatch.setattr(cls, "_fit_interactions", lambda self, train, fit=cls._fit_interactions: fits.append(type(self).__name__) or fit(self, train))

    ratings = synthetic_interactions(spark, 40, 50, 1000, seed=3)
    split = temporal_split(ratings)
    # Given first, the merged row is still tuned after the single rows, and takes the item-to-item row that won.
    result = tune(split.train, ["rrf_small", "item_cf", "swing"], trials=2, k=5, seed=1)
    assert list(result.models) == ["item_cf", "swing", "rrf_small"]
    scores = {name: result.models[name].score for name in ("item_cf", "swing")}
    winner = max(scores, key=lambda name: (scores[name], name == "item_cf"))
    chosen = result.models["rrf_small"].params
    assert chosen["channels"] == [winner, "global_hot"]
    assert chosen["channel_params"] == {winner: result.models[winner].params}
    assert len(chosen["weights"]) == 2 and 1.0 <= chosen["rrf_k"] <= 200.0
    assert fits == ["ItemCF", "ItemCF", "Swing", "Swing", "ItemCF" if winner == "item_cf" else "Swing"]  # one fit, both merged trials

    fits.clear()
    recommended = []
    recommend = RetrievalModel.recommend
    monkeypatch.setattr(
        RetrievalModel, "recommend", lambda self, queries, k: recommended.append(type(self).__name__) or recommend(self, queries, k)
    )
    tuned = {name: {"params": model.params, "score": model.score} for name, model in result.models.items()}
    rows = run_benchmark(spark, ratings, "synthetic", ["item_cf", "swing", "rrf_small"], k=5, bootstrap=0, tuned=tuned).results
    assert fits == ["ItemCF", "Swing"]  # the merged row reuses the winner's own row
    assert recommended == ["ItemCFModel", "SwingModel", "GlobalHotModel"]  # and its list: only global_hot's is new
    assert rows[2]["params_source"] == "tuned" and rows[2]["params"]["weights"] == chosen["weights"]


def test_unset_weights_and_shares_are_tried_as_one_per_channel_which_is_the_same_merge(split):
    train, test = split
    for strategy, key in (("rrf", "weights"), ("quota", "shares")):
        params = {"channels": ["item_cf", "global_hot"], "strategy": strategy, "channel_params": {"item_cf": ITEM_CF}}
        unset = MultiChannel(**params).fit(train).recommend(test, K)
        ones = MultiChannel(**params, **{key: [1.0, 1.0]}).fit(train).recommend(test, K)
        assert rows(unset) == rows(ones) and rows(unset)
        domain = MultiChannel.SEARCH_SPACE[key].resolved(params)
        assert domain.encode(None, key) == {f"{key}[0]": 1.0, f"{key}[1]": 1.0}
