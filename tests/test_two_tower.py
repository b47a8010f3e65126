"""DSSM and SimpleX end to end on tiny data, trained in the driver (backend='local'); the distributed
backends are covered in test_distributed.py."""

import os
import sys

import numpy as np
import pytest

from spark_retrieval.columns import ITEM_ID, QUERY_ID, RECOMMENDATIONS, SCORE, USER_ID
from spark_retrieval.data.split import temporal_split, validation_split
from spark_retrieval.evaluation import evaluate
from spark_retrieval.errors import EmptyDataError, InvalidParameterError, MalformedDataError, MissingDependencyError
from spark_retrieval.models.base import RetrievalModel
from spark_retrieval.models.two_tower import DSSM, DSSMModel, SimpleX, SimpleXModel
from spark_retrieval.models.two_tower import checkpoint as checkpoint_module
from spark_retrieval.models.two_tower import model as model_module
from spark_retrieval.models.two_tower import training as training_module

pytestmark = pytest.mark.slow

SCHEMA = "user_id long, item_id long, rating double, timestamp long"
TINY = dict(backend="local", epochs=2, embedding_dim=8, batch_size=64, verbose=False)


@pytest.fixture(scope="module")
def data(spark):
    rng = np.random.default_rng(0)
    rows = []
    for user in range(40):
        for t in range(15):
            item = (user + t) % 50 if rng.random() < 0.6 else int(rng.integers(0, 50))
            rows.append((user, item, float(rng.integers(1, 6)), t))
    ratings = spark.createDataFrame(rows, SCHEMA)
    items = spark.createDataFrame([(i, [f"g{i % 4}", f"h{i % 3}"]) for i in range(50)], "item_id long, genres array<string>")
    users = spark.createDataFrame(
        [(u, "MF"[u % 2], 20 + u % 5, f"job{u % 3}") for u in range(40)], "user_id long, gender string, age int, occupation string"
    )
    split = temporal_split(ratings)
    return split.train.cache(), split.test.cache(), items, users


def dssm(data, **params):
    _, _, items, users = data
    return DSSM(**{**TINY, "hidden_dims": [16, 8], "item_features": items, "user_features": users, **params})


def lists(recommendations):
    return {r[QUERY_ID]: [(e[ITEM_ID], e[SCORE]) for e in r[RECOMMENDATIONS]] for r in recommendations.collect()}


@pytest.fixture(scope="module")
def fitted(data):
    return dssm(data).fit(data[0])


@pytest.fixture(scope="module")
def fitted_lists(data, fitted):
    """``fitted``'s top-5 lists for the test queries, computed once for the tests that read or compare them."""
    return lists(fitted.recommend(data[1], 5))


def test_recommendations_exclude_seen_items_and_are_ordered(data, fitted, fitted_lists):
    train, test, _, _ = data
    recommendations = fitted_lists
    seen = {}
    for row in train.collect():
        seen.setdefault(row[USER_ID], set()).add(row[ITEM_ID])
    users = {r[QUERY_ID]: r[USER_ID] for r in test.collect()}
    assert set(recommendations) == set(users)
    for query, entries in recommendations.items():
        assert len(entries) == 5
        assert not {item for item, _ in entries} & seen[users[query]]
        assert entries == sorted(entries, key=lambda e: (-e[1], e[0]))
    history = fitted.training_history
    assert [h["epoch"] for h in history] == [1, 2] and all(h["samples_per_second"] > 0 for h in history)


def test_embeddings_for_export(data, fitted):
    train, test, _, _ = data
    items = fitted.item_embeddings()
    assert items.columns == [ITEM_ID, "vector"]
    assert items.count() == train.select(ITEM_ID).distinct().count()
    users = fitted.user_embeddings(test)
    assert users.columns == [QUERY_ID, USER_ID, "vector"]
    vectors = np.array([r["vector"] for r in users.collect()])
    assert vectors.shape == (test.count(), 8)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # normalize=True


def test_save_load_round_trip_gives_identical_recommendations(data, fitted, fitted_lists, tmp_path):
    test = data[1]
    path = str(tmp_path / "dssm")
    fitted.save(path)
    loaded = RetrievalModel.load(path)
    assert isinstance(loaded, DSSMModel)
    assert loaded.get("hidden_dims") == [16, 8] and loaded.get("exclude_seen") is True
    assert lists(loaded.recommend(test, 5)) == fitted_lists
    assert loaded.training_history == fitted.training_history


def test_weights_reach_the_embedding_tasks_through_files_not_the_driver(data, fitted, fitted_lists, tmp_path, monkeypatch):
    """Rank 0 writes the weights; the model's ``state`` table reads that file and the embedding tasks read it
    themselves: with the driver's collect path broken, recommendations are unchanged."""
    train, test, _, _ = data
    (path,) = fitted.tables["state"].inputFiles()
    assert path.endswith(f"/{checkpoint_module.STATE_FILE}") and "two-tower-weights-" in path
    source = fitted._state_source()
    assert isinstance(source, model_module.StateFiles) and source.paths == (path,)
    weights = checkpoint_module.read_state_files(source.paths)
    assert weights == checkpoint_module.bytes_from_table(fitted.tables["state"])
    assert checkpoint_module.parameter_hash(fitted.network()) == fitted.metadata["training"]["parameter_hashes"][0]

    def no_driver_collect(table):
        raise AssertionError("the weights were collected to the driver")

    monkeypatch.setattr(model_module, "bytes_from_table", no_driver_collect)
    fresh = DSSMModel(tables=dict(fitted.tables), metadata=fitted.metadata)
    fitted._copyValues(fresh)
    assert lists(fresh.recommend(test, 5)) == fitted_lists

    # With a working_dir the weights are kept there, one folder per fit.
    kept = dssm(data, epochs=1, working_dir=str(tmp_path / "run")).fit(train)
    (kept_path,) = kept.tables["state"].inputFiles()
    assert kept_path.startswith(f"file://{tmp_path}/run/weights/")


def test_a_plan_outlives_its_model_and_temporary_weights_go_at_exit(data):
    """``fit(...).recommend(...)`` in one expression: the model object is gone before the lists are computed."""
    import gc
    import subprocess

    train, test, _, _ = data
    recommendations = dssm(data, epochs=1).fit(train).recommend(test, 3)
    gc.collect()
    assert recommendations.count() == test.select(QUERY_ID).distinct().count()

    made = subprocess.run(
        [sys.executable, "-c", "from spark_retrieval.models.two_tower.estimator import _weights_directory\n"
         "import os; folder = _weights_directory(None); open(os.path.join(folder, 'w'), 'w').close(); print(folder)"],
        capture_output=True, text=True, check=True,
    )
    folder = made.stdout.strip()
    assert "two-tower-weights-" in folder and not os.path.exists(folder)


def test_weight_files_round_trip_in_chunks_at_a_uri_as_spark_spells_it(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "CHUNK_BYTES", 7)
    data = bytes(range(200)) * 3
    folder = tmp_path / "a folder" / "weights"
    assert checkpoint_module.write_state(str(folder), data) == str(folder)
    import pyarrow.parquet as pq

    stored = pq.read_table(folder / checkpoint_module.STATE_FILE)
    assert stored.num_rows == -(-len(data) // 7) and stored.column("chunk").to_pylist() == list(range(stored.num_rows))
    uri = (folder / checkpoint_module.STATE_FILE).as_uri()  # file:///…/a%20folder/…, as inputFiles() gives it
    assert "%20" in uri and checkpoint_module.read_state_files([uri]) == data


def test_same_seed_on_one_process_gives_identical_recommendations(data, fitted, fitted_lists):
    train, test, _, _ = data
    again = dssm(data).fit(train)
    assert again.metadata["training"]["parameter_hashes"] == fitted.metadata["training"]["parameter_hashes"]
    assert lists(again.recommend(test, 5)) == fitted_lists


def test_sampled_softmax_without_side_features(data):
    train, test, _, _ = data
    model = DSSM(**TINY, hidden_dims=[16, 8], loss="sampled_softmax").fit(train)
    assert {f.name for f in model.schema.user} == {"user_id", "last_item", "recent_items"}
    assert all(len(entries) == 3 for entries in lists(model.recommend(test, 3)).values())


def test_simplex_scores_are_cosines(data):
    train, test, items, users = data
    model = SimpleX(**TINY, num_negatives=8, item_features=items, user_features=users).fit(train)
    assert isinstance(model, SimpleXModel)
    scores = [score for entries in lists(model.recommend(test, 4)).values() for _, score in entries]
    assert scores and all(-1.0 - 1e-6 <= s <= 1.0 + 1e-6 for s in scores)


def test_killed_run_resumes_from_its_last_checkpoint(data, tmp_path, monkeypatch):
    train = data[0]
    real_save = training_module.save_checkpoint

    def save_then_die(directory, checkpoint):
        real_save(directory, checkpoint)
        raise RuntimeError("simulated kill after the first epoch's checkpoint")

    monkeypatch.setattr(training_module, "save_checkpoint", save_then_die)
    with pytest.raises(RuntimeError, match="simulated kill"):
        dssm(data, working_dir=str(tmp_path / "run")).fit(train)
    monkeypatch.setattr(training_module, "save_checkpoint", real_save)

    resumed = dssm(data, working_dir=str(tmp_path / "run")).fit(train)
    uninterrupted = dssm(data, working_dir=str(tmp_path / "fresh")).fit(train)
    assert resumed.metadata["training"]["resumed_from_epoch"] == 1
    assert [h["epoch"] for h in resumed.training_history] == [1, 2]
    assert uninterrupted.metadata["training"]["resumed_from_epoch"] is None
    assert resumed.metadata["training"]["parameter_hashes"] == uninterrupted.metadata["training"]["parameter_hashes"]

    # Other hyper-parameters: the old checkpoint is not reused, and the driver says so.
    with pytest.warns(UserWarning, match="ignoring the checkpoint .*another configuration"):
        other = dssm(data, working_dir=str(tmp_path / "run"), learning_rate=0.01).fit(train)
    assert other.metadata["training"]["resumed_from_epoch"] is None


def test_negatives_shared_per_batch_are_seeded_resumable_and_not_the_per_example_run(data, tmp_path, monkeypatch):
    """The resumed run equals the uninterrupted one: its first epoch (from the killed run's checkpoint) and its
    second (drawn again from the same seeded stream). SimpleX's loss on shared negatives: test_two_tower_losses.py."""
    train, test, _, _ = data

    def hashes(model):
        return model.metadata["training"]["parameter_hashes"]

    shared = dssm(data, loss="bce", num_negatives=8, negative_sampling="per_batch").fit(train)
    assert hashes(dssm(data, loss="bce", num_negatives=8).fit(train)) != hashes(shared)
    assert all(len(entries) == 3 for entries in lists(shared.recommend(test, 3)).values())

    real_save = training_module.save_checkpoint

    def save_then_die(directory, checkpoint):
        real_save(directory, checkpoint)
        raise RuntimeError("simulated kill after the first epoch's checkpoint")

    rerun = dict(loss="bce", num_negatives=8, negative_sampling="per_batch", working_dir=str(tmp_path / "run"))
    monkeypatch.setattr(training_module, "save_checkpoint", save_then_die)
    with pytest.raises(RuntimeError, match="simulated kill"):
        dssm(data, **rerun).fit(train)
    monkeypatch.setattr(training_module, "save_checkpoint", real_save)
    resumed = dssm(data, **rerun).fit(train)
    assert resumed.metadata["training"]["resumed_from_epoch"] == 1
    assert hashes(resumed) == hashes(shared)


def test_bad_parameters_fail_at_construction():
    with pytest.raises(InvalidParameterError, match="DSSM: loss must be one of bce, sampled_softmax, got 'hinge'"):
        DSSM(loss="hinge")
    with pytest.raises(InvalidParameterError, match="num_proc"):
        DSSM(num_proc=0)
    with pytest.raises(InvalidParameterError, match="backend"):
        SimpleX(backend="mpi")
    with pytest.raises(InvalidParameterError, match="hidden_dims"):
        DSSM(hidden_dims=[])
    with pytest.raises(InvalidParameterError, match="margin"):
        SimpleX(margin=2.0)
    with pytest.raises(InvalidParameterError, match="unknown parameter 'learning_rat'"):
        DSSM(learning_rat=0.1)
    with pytest.raises(InvalidParameterError, match="shuffle_buffer"):
        DSSM(batch_size=64, shuffle_buffer=32)
    with pytest.raises(InvalidParameterError, match="backend='local' runs one process"):
        DSSM(backend="local", num_proc=2)
    with pytest.raises(InvalidParameterError, match="backend='process' runs one process"):
        DSSM(backend="process", num_proc=2)
    with pytest.raises(InvalidParameterError, match="same embedding_dim"):
        SimpleX(schema="dssm_movielens")
    with pytest.raises(InvalidParameterError, match="item_features must be a Spark DataFrame"):
        DSSM(item_features=[1, 2])


def test_params_follow_pyspark_ml(data):
    _, _, items, users = data
    estimator = DSSM(loss="bce", epochs=3, item_features=items, user_features=users)
    assert estimator.isSet("loss") and estimator.isSet("epochs") and not estimator.isSet("hidden_dims")
    assert estimator.get("hidden_dims") == [512, 256, 128] and estimator.get("backend") == "auto"
    assert "loss: bce (sampled negatives)" in estimator.explainParams()
    assert "(default: sampled_softmax, current: bce)" in estimator.explainParams()
    copied = estimator.copy({estimator.epochs: 1})
    assert copied.get("epochs") == 1 and estimator.get("epochs") == 3
    assert copied.item_features is items and copied.user_features is users
    assert copied.extractParamMap()[copied.loss] == "bce"
    with pytest.raises(InvalidParameterError, match="DSSM: epochs must be an integer >= 1, got 0"):
        estimator.copy({estimator.epochs: 0})
    simplex = SimpleX()
    assert (simplex.get("num_negatives"), simplex.get("epochs")) == (100, 7)
    assert SimpleX().get("learning_rate") != DSSM().get("learning_rate") == 3e-3
    assert DSSMModel().get("temperature") == 0.05 and SimpleXModel().get("margin") == simplex.get("margin")


def test_auto_backend_is_a_child_process_for_one_local_process_else_horovod_when_installed(monkeypatch):
    from spark_retrieval.models.two_tower.estimator import resolve_backend

    assert resolve_backend("local") == "local" and resolve_backend("horovod", local_single_process=True) == "horovod"
    assert resolve_backend("auto", local_single_process=True) == "process"
    monkeypatch.setitem(sys.modules, "horovod", None)
    assert resolve_backend("auto") == "torch_distributor"


def test_an_estimator_is_a_pipeline_stage(data):
    from pyspark.ml import Pipeline

    train = data[0]
    estimator = dssm(data, epochs=1)
    pipeline_model = Pipeline(stages=[estimator]).fit(train, {estimator.hidden_dims: [8, 4]})
    (model,) = pipeline_model.stages
    assert isinstance(model, DSSMModel) and model.get("hidden_dims") == [8, 4] and model.get("epochs") == 1
    assert model.metadata["network"]["options"]["hidden_dims"] == [8, 4]
    assert model.metadata["training"]["backend"] == "local" and estimator.get("hidden_dims") == [16, 8]


def test_bad_data_fails_before_training(spark, data):
    train, _, items, users = data
    with pytest.raises(MalformedDataError, match="occupation"):
        dssm(data, user_features=users.drop("occupation")).fit(train)
    with pytest.raises(MalformedDataError, match="timestamp"):
        dssm(data).fit(train.drop("timestamp"))
    with pytest.raises(EmptyDataError, match="train is empty"):
        dssm(data).fit(train.limit(0))
    with pytest.raises(EmptyDataError, match="no positive event"):
        dssm(data).fit(train.where("rating <= 2"))


def test_horovod_backend_without_horovod_fails_at_once(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "horovod", None)
    monkeypatch.setitem(sys.modules, "horovod.torch", None)
    monkeypatch.setitem(sys.modules, "horovod.spark", None)
    with pytest.raises(MissingDependencyError, match="install_horovod.sh.*torch_distributor"):
        dssm(data, backend="horovod").fit(data[0])


def test_registry_rows_build_seeded_estimators_on_the_auto_backend():
    from spark_retrieval.models.registry import MODELS, build_estimator

    rows = [name for name, entry in MODELS.items() if "two_tower" in entry.estimator]
    built = {name: build_estimator(name, seed=3) for name in rows}
    assert {name: (type(e).__name__, e.get("seed"), e.get("backend")) for name, e in built.items()} == {
        "dssm_bce_neg10": ("DSSM", 3, "auto"),
        "dssm_bce_neg100": ("DSSM", 3, "auto"),
        "dssm_softmax": ("DSSM", 3, "auto"),
        "simplex_ccl": ("SimpleX", 3, "auto"),
    }
    assert [built[n].get("num_negatives") for n in ("dssm_bce_neg10", "dssm_bce_neg100")] == [10, 100]
    assert built["dssm_softmax"].get("loss") == "sampled_softmax" and built["dssm_bce_neg10"].get("loss") == "bce"


def test_verbose_training_prints_each_epoch_with_an_eta(data, capfd):
    dssm(data, epochs=3, verbose=True).fit(data[0])
    err = capfd.readouterr().err
    epochs = [line for line in err.splitlines() if "] epoch " in line]
    assert len(epochs) == 3 and "samples/s" in epochs[0]
    assert "ETA" in epochs[0] and "ETA" in epochs[1] and "ETA" not in epochs[2]  # nothing left after the last


# -- validation after every epoch ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def validation(data):
    split = validation_split(data[0])
    return split.train.cache(), split.test.cache()


def stop_epoch(scores, patience):
    """The epoch after which training with these per-epoch scores stops (the rule, written out)."""
    best = 0
    for epoch, score in enumerate(scores, start=1):
        if best == 0 or score > scores[best - 1]:
            best = epoch
        if epoch - best >= patience:
            return epoch
    return len(scores)


def test_validation_keeps_the_best_epoch_and_stops_after_patience_epochs_without_a_better_score(data, validation):
    fit_on, queries = validation
    estimator = dssm(data, epochs=8, patience=1, learning_rate=0.05, validation_k=5, validation_queries=queries)
    model = estimator.fit(fit_on)
    training = model.metadata["training"]
    scores = [record["validation"] for record in training["history"]]
    best = training["best_epoch"]
    assert len(scores) == stop_epoch(scores, 1) < 8  # stopped early, by the rule
    assert best == 1 + scores.index(max(scores))
    assert training["validation"] == {
        "metric": "ndcg", "k": 5, "patience": 1, "queries": queries.select(QUERY_ID).distinct().count()
    }
    phases = training["seconds"]  # where the fit's time went
    assert set(phases) == {"training_data", "epochs", "validation", "start_and_finish"}
    assert phases["epochs"] == pytest.approx(sum(r["seconds"] for r in training["history"]))
    assert phases["validation"] == pytest.approx(sum(r["validation_seconds"] for r in training["history"]))
    assert min(phases.values()) >= 0 and phases["validation"] > 0
    # The score computed in the training process is the evaluator's, on the weights the model kept ...
    assert evaluate(model.recommend(queries, 5), queries, k=5)["ndcg"] == pytest.approx(scores[best - 1], abs=1e-9)
    # ... and those weights are, bit for bit, a plain fit's that ran exactly the best number of epochs.
    plain = dssm(data, epochs=best, learning_rate=0.05).fit(fit_on)
    assert plain.metadata["training"]["parameter_hashes"] == training["parameter_hashes"]
    assert "best_epoch" not in plain.metadata["training"]


def test_a_resumed_validated_fit_ends_where_an_uninterrupted_one_does(data, validation, tmp_path):
    fit_on, queries = validation
    settings = dict(patience=5, validation_metric="recall", validation_k=10, validation_queries=queries)
    uninterrupted = dssm(data, epochs=4, **settings).fit(fit_on).metadata["training"]
    dssm(data, epochs=2, checkpoint_dir=str(tmp_path), **settings).fit(fit_on)
    resumed = dssm(data, epochs=4, checkpoint_dir=str(tmp_path), **settings).fit(fit_on).metadata["training"]
    assert resumed["resumed_from_epoch"] == 2
    assert [r["validation"] for r in resumed["history"]] == [r["validation"] for r in uninterrupted["history"]]
    assert (resumed["best_epoch"], resumed["parameter_hashes"]) == (uninterrupted["best_epoch"], uninterrupted["parameter_hashes"])


def test_validation_queries_must_be_a_dataframe_with_the_query_columns(data, validation):
    fit_on, queries = validation
    with pytest.raises(InvalidParameterError, match="validation_queries"):
        dssm(data, validation_queries=[1, 2])
    with pytest.raises(MalformedDataError, match="validation queries"):
        dssm(data, validation_queries=queries.drop("last_item")).fit(fit_on)
