"""Tuning: the validation split, the declared search spaces, the no-test-read guarantee, resume, determinism and
bad input. Tiny data and budgets (fast models only: Global Hot and Item CF)."""

import inspect
import json
import os
import shutil

import pytest

from spark_retrieval import tuning
from spark_retrieval.columns import ITEM_ID, LAST_ITEM, QUERY_ID, RECENT_ITEMS, USER_ID
from spark_retrieval.data.split import temporal_split, validation_split
from spark_retrieval.data.synthetic import synthetic_interactions
from spark_retrieval.errors import DataNotFoundError, EmptyDataError, InvalidParameterError
from spark_retrieval.models.registry import MODELS
from spark_retrieval.search import Choice, FloatRange, IntRange
from spark_retrieval.tuning import ModelTuning, TuningResult, read_tuned_params, search_space, tune, write_tuning

SCHEMA = "user_id long, item_id long, rating double, timestamp long"


def without_seconds(document):
    return {
        **document,
        "models": {
            name: {**model, "table": [{k: v for k, v in row.items() if k != "seconds"} for row in model["table"]]}
            for name, model in document["models"].items()
        },
    }


@pytest.fixture(scope="module")
def split(spark):
    result = temporal_split(synthetic_interactions(spark, 40, 50, 1000, seed=3))
    result.train.cache()  # read by every tune call below: built once
    return result


# -- the validation split ----------------------------------------------------------------------------
def test_validation_split_is_the_protocol_applied_inside_train(spark):
    # user 1: nine events; the last three are test events, the three before them validation events.
    events = [(1, 10 + n, float(rating), 100 + n) for n, rating in enumerate([5, 4, 3, 5, 1, 4, 5, 5, 5])]
    # user 2: five events: two train events left, too few for a validation query (holdout 3 needs 4).
    events += [(2, 20 + n, 5.0, n) for n in range(5)]
    split = temporal_split(spark.createDataFrame(events, SCHEMA), holdout=3)
    validation = validation_split(split.train, holdout=3, positive_threshold=2.0)

    assert sorted((r[USER_ID], r[ITEM_ID]) for r in validation.train.collect()) == [(1, 10), (1, 11), (1, 12), (2, 20), (2, 21)]
    queries = {r[ITEM_ID]: r for r in validation.test.collect()}
    assert sorted(queries) == [13, 15]  # 14 is rated 1, not above the threshold
    assert queries[13][LAST_ITEM] == 12 and queries[13][RECENT_ITEMS] == [10, 11, 12]
    assert queries[15][LAST_ITEM] == 14 and queries[15][RECENT_ITEMS] == [10, 11, 12, 13, 14]
    assert queries[13][QUERY_ID] == 1 * 3 + 0 and queries[15][QUERY_ID] == 1 * 3 + 2
    test_events = {(r[USER_ID], r[ITEM_ID]) for r in split.test.collect()}
    validation_events = {(r[USER_ID], r[ITEM_ID]) for r in validation.events.collect()}
    assert test_events == {(1, 16), (1, 17), (1, 18), (2, 22), (2, 23), (2, 24)}
    assert not test_events & validation_events  # built from train alone
    counts = validation.counts()
    assert counts["test_queries"] == 2 and counts["short_users"] == 1 and counts["held_out_events"] == 3


def test_validation_split_takes_no_test_set():
    assert "test" not in inspect.signature(validation_split).parameters


# -- search spaces -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_declared_spaces_hold_the_defaults_and_name_real_params(name):
    if "two_tower" in MODELS[name].estimator:
        pytest.importorskip("torch")
    estimator_class = MODELS[name].estimator_class()
    defaults = estimator_class().params_dict()
    space = estimator_class.SEARCH_SPACE
    assert all(estimator_class().hasParam(key) for key in space)
    assert {key: domain.contains(defaults[key]) for key, domain in space.items()} == {key: True for key in space}


def test_what_each_row_searches():
    assert search_space("global_hot") == {}
    assert set(search_space("item_cf")) == {"k_neighbours", "shrinkage", "min_cooccurrence"}
    assert set(search_space("swing")) == {"alpha", "user_alpha", "user_beta"}
    assert set(search_space("als")) == {"rank", "reg_param", "alpha", "max_iter"}
    assert search_space("als_seed_preset") == {}  # rank, iterations and reg fixed by the row; alpha unused on ratings
    assert set(search_space("item_cf", fixed={"shrinkage": 1.0})) == {"k_neighbours", "min_cooccurrence"}


def test_two_tower_rows_search_what_their_preset_leaves_and_choose_epochs_inside_each_trial():
    pytest.importorskip("torch")
    softmax, neg100 = search_space("dssm_softmax"), search_space("dssm_bce_neg100")
    assert "epochs" not in neg100 and "epochs" not in softmax
    assert tuning.trains_in_epochs("dssm_softmax") and not tuning.trains_in_epochs("item_cf")
    assert "num_negatives" not in softmax  # in-batch negatives
    assert "num_negatives" not in neg100  # the row fixes its 100 negatives (and its loss)
    assert {"learning_rate", "temperature", "hidden_dims"} <= set(softmax)
    assert set(search_space("simplex_ccl")) == {"negative_weight", "margin", "gate", "learning_rate", "dropout"}


def test_domains_ask_optuna_and_decode_what_it_stored():
    import optuna

    trial = optuna.trial.FixedTrial({"n": 7, "x": 0.5, "dims": "[256, 128]", "loss": "bce"})
    assert IntRange(1, 10).suggest(trial, "n") == 7
    assert FloatRange(0.0, 1.0).suggest(trial, "x") == 0.5
    assert Choice(((512, 256), (256, 128))).suggest(trial, "dims") == [256, 128]
    assert Choice(("bce", "ccl")).suggest(trial, "loss") == "bce"
    assert Choice(((256, 128),)).contains([256, 128]) and not Choice((1, 2)).contains(True)
    assert FloatRange(1.0, 2.0, when={"loss": "bce"}).applies({"loss": "bce"})
    assert not FloatRange(1.0, 2.0, when={"loss": "bce"}).applies({"loss": "ccl"})
    for bad in (lambda: IntRange(5, 1), lambda: FloatRange(0.0, 1.0, log=True), lambda: IntRange(1.5, 3), lambda: Choice(())):
        with pytest.raises(InvalidParameterError):
            bad()


def test_domains_encode_a_value_as_optuna_stores_it():
    from spark_retrieval.search import Each

    stored = {
        **IntRange(1, 10).encode(7, "n"), **Choice(((512, 256), (256, 128))).encode([256, 128], "dims"),
        **Each(FloatRange(0.0, 2.0), of="channels", length=2).encode([0.5, 1.5], "w"),
    }
    assert stored == {"n": 7, "dims": "[256, 128]", "w[0]": 0.5, "w[1]": 1.5}
    assert IntRange(1, 10).encode(11, "n") == {} and Each(FloatRange(0.0, 2.0), of="c", length=2).encode(None, "w") == {}
    unset_is_one = Each(FloatRange(0.0, 2.0), of="c", unset=1.0).resolved({"c": ["a", "b"]})
    assert unset_is_one.encode(None, "w") == {"w[0]": 1.0, "w[1]": 1.0}


def test_the_first_trial_is_the_rows_own_settings(spark, split):
    result = tune(split.train, ["item_cf"], trials=1, fixed={"item_cf": {"shrinkage": 1.0}})
    defaults = MODELS["item_cf"].estimator_class()().params_dict()
    first = result.models["item_cf"].table[0]["params"]
    assert first == {key: defaults[key] for key in ("k_neighbours", "min_cooccurrence")}


# -- the test set is never read -----------------------------------------------------------------------
def test_tune_has_no_test_argument():
    assert list(inspect.signature(tune).parameters)[:3] == ["train", "models", "trials"]
    assert not any("test" in name for name in inspect.signature(tune).parameters)


def test_tuning_runs_with_the_test_set_unreadable(spark, tmp_path):
    source, train_path = str(tmp_path / "ratings"), str(tmp_path / "train")
    synthetic_interactions(spark, 40, 50, 1000, seed=4).write.parquet(source)
    split = temporal_split(spark.read.parquet(source))
    split.train.write.parquet(train_path)
    shutil.rmtree(source)
    with pytest.raises(Exception):
        split.test.count()  # the test events are gone
    messages = []
    result = tune(spark.read.parquet(train_path), ["global_hot"], trials=2, progress=messages.append)
    assert result.models["global_hot"].trials == 1 and result.models["global_hot"].params == {}
    assert any("nothing to tune" in m for m in messages)


# -- resume and determinism ---------------------------------------------------------------------------
def test_resume_runs_only_the_missing_trials_and_matches_an_uninterrupted_run(spark, split, tmp_path, monkeypatch):
    import optuna

    evaluated = []
    evaluate = tuning.evaluate

    def counting(*args, **kwargs):
        evaluated.append(1)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(tuning, "evaluate", counting)
    folder = str(tmp_path / "tune")
    messages = []
    tune(split.train, ["item_cf"], trials=1, storage_dir=folder, progress=messages.append)
    assert any(m.startswith("tune item_cf: trial 1/1 (the row's settings) {k_neighbours: ") and "ndcg@20 " in m and "(best " in m for m in messages)
    assert len(evaluated) == 1
    evaluated.clear()
    resumed = tune(split.train, ["item_cf"], trials=2, storage_dir=folder)
    assert len(evaluated) == 1  # only the second trial runs
    study = optuna.load_study(study_name="item_cf", storage=f"sqlite:///{folder}/{tuning.STUDY_FILE}")
    assert len(study.trials) == 2
    assert resumed.models["item_cf"].trials == 2

    uninterrupted = tune(split.train.repartition(3), ["item_cf"], trials=2)
    assert without_seconds(resumed.to_json()) == without_seconds(uninterrupted.to_json())
    document = resumed.to_json()
    table = document["models"]["item_cf"]["table"]
    assert [row["number"] for row in table] == [0, 1]
    assert document["models"]["item_cf"]["score"] == max(row["score"] for row in table)
    assert document["validation"]["test_queries"] > 0 and document["trials"] == 2


def test_a_study_with_other_settings_is_refused(spark, split, tmp_path):
    folder = str(tmp_path / "tune")
    tune(split.train, ["global_hot"], trials=1, storage_dir=folder)
    with pytest.raises(InvalidParameterError, match="metric"):
        tune(split.train, ["global_hot"], trials=1, metric="recall", storage_dir=folder)


# -- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"models": ["no_such_model"]},
        {"trials": 0},
        {"trials": True},
        {"metric": "auc"},
        {"k": 0},
        {"fixed": {"item_cf": {"k_neighbours": 0}}},
        {"spaces": {"item_cf": {"no_such_param": IntRange(1, 2)}}},
    ],
)
def test_bad_arguments_fail_before_anything_is_read_or_written(spark, tmp_path, kwargs):
    class Unreadable:
        def __getattr__(self, name):
            raise AssertionError("train was used")

    folder = str(tmp_path / "tune")
    arguments = {"models": ["item_cf"], "trials": 2, **kwargs}
    with pytest.raises(InvalidParameterError):
        tune(Unreadable(), storage_dir=folder, **arguments)
    assert not os.path.exists(folder)


def test_no_validation_query_is_an_empty_data_error(spark):
    events = spark.createDataFrame([(1, 1, 5.0, 1), (1, 2, 5.0, 2)], SCHEMA)
    with pytest.raises(EmptyDataError, match="validation"):
        tune(events, ["global_hot"], trials=1)


# -- tuned.json ---------------------------------------------------------------------------------------
def tuned_document(models):
    result = TuningResult("ndcg", 20, 2, 0, 3, 2.0, {"test_queries": 5})
    for name, params in models.items():
        table = [{"number": 0, "params": params, "score": 0.25, "seconds": 1.0}]
        result.models[name] = ModelTuning(name, params, 0.25, {}, table)
    return result


def test_write_and_read_tuned_params(tmp_path):
    folder = str(tmp_path / "out")
    write_tuning(tuned_document({"global_hot": {}, "item_cf": {"k_neighbours": 30.0, "shrinkage": 1}}), folder)
    path = os.path.join(folder, "tuned.json")
    assert json.load(open(path))["models"]["item_cf"]["trials"] == 1
    assert open(os.path.join(folder, "tuning.png"), "rb").read(4) == b"\x89PNG"
    assert read_tuned_params(path) == {"global_hot": {}, "item_cf": {"k_neighbours": 30, "shrinkage": 1.0}}
    assert read_tuned_params(path, ["item_cf", "swing"]) == {"item_cf": {"k_neighbours": 30, "shrinkage": 1.0}}


@pytest.mark.parametrize(
    "models, key",
    [
        ({"no_such_model": {}}, "models.no_such_model"),
        ({"item_cf": {"neighbours": 10}}, "neighbours"),
        ({"item_cf": {"k_neighbours": "ten"}}, "k_neighbours"),
        ({"swing": {"alpha": [1.0]}}, "alpha"),
    ],
)
def test_a_bad_tuned_json_names_the_file_and_key(tmp_path, models, key):
    path = str(tmp_path / "tuned.json")
    with open(path, "w") as stream:
        json.dump({"models": {name: {"params": params} for name, params in models.items()}}, stream)
    with pytest.raises(InvalidParameterError) as raised:
        read_tuned_params(path)
    assert path in str(raised.value) and key in str(raised.value) and "\n" not in str(raised.value)


def test_a_missing_or_unparsable_tuned_json(tmp_path):
    with pytest.raises(DataNotFoundError):
        read_tuned_params(str(tmp_path / "missing.json"))
    path = tmp_path / "tuned.json"
    path.write_text("{not json")
    with pytest.raises(InvalidParameterError, match="not JSON"):
        read_tuned_params(str(path))


@pytest.mark.slow
def test_a_two_tower_trial_keeps_its_best_epoch_and_reports_it_as_epochs(spark, split):
    pytest.importorskip("torch")
    small = {"backend": "local", "embedding_dim": 8, "hidden_dims": [16, 8], "batch_size": 64, "epochs": 4}
    messages = []
    result = tune(
        split.train, ["dssm_softmax"], trials=2, k=5, seed=1, fixed={"dssm_softmax": small},
        spaces={"dssm_softmax": {"learning_rate": FloatRange(1e-3, 1e-1, log=True)}}, progress=messages.append,
    )
    tuned = result.models["dssm_softmax"]
    for row in tuned.table:
        assert set(row["params"]) == {"learning_rate", "epochs"} and 1 <= row["params"]["epochs"] <= 4
    chosen = max(tuned.table, key=lambda row: row["score"])
    assert tuned.params == {**small, **chosen["params"]}
    assert any(m.startswith("tune dssm_softmax: trial 2/2 {learning_rate: ") and "epochs: " in m for m in messages)
