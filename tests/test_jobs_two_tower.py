"""The two-tower rows through the spark-submit jobs: their config files, and prepare → train → evaluate on a tiny
ml-1m with a short run (trained in the driver: ``--set model.params.backend=local``; the distributed backends are
covered in test_distributed.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyspark
from spark_retrieval.columns import ITEM_ID, QUERY_ID, RECOMMENDATIONS
from spark_retrieval.config import load_config
from spark_retrieval.jobs import build_estimator, validate
from spark_retrieval.jobs import main as job_main
from spark_retrieval.models import registry
from spark_retrieval.models.two_tower.simplex import SimpleX
from spark_retrieval.models.two_tower.training import KILL_VARIABLE

from horovod_available import requires_horovod

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "jobs" / "conf"
DATASETS = ("ml-1m", "ml-100k")
METRICS = ("precision", "recall", "map", "ndcg", "hit_rate", "coverage", "queries")
ENV = {"DATA_DIR": "/data/movielens", "OUTPUT": "/tmp/out"}
# A short run: small towers, two epochs, one process in the driver.
SHORT = [
    "--set", "model.params.backend=local",
    "--set", "model.params.epochs=2",
    "--set", "model.params.embedding_dim=8",
    "--set", "model.params.batch_size=64",
    "--set", "k=5",
]
TWO_TOWER_ROWS = [name for name, entry in registry.MODELS.items() if "two_tower" in entry.estimator]
DSSM_SHORT = [*SHORT, "--set", "model.params.hidden_dims=[16, 8]"]
SIMPLEX_SHORT = [*SHORT, "--set", "model.params.num_negatives=8"]


def configured_params(estimator):
    return {p.name: estimator.getOrDefault(p) for p in estimator.params if estimator.isDefined(p)}


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("row", TWO_TOWER_ROWS)
def test_two_tower_config_is_valid_and_matches_the_benchmark_row(dataset, row):
    """Each shipped file passes the job's own checks and builds exactly the estimator of the benchmark row."""
    path = CONF / f"{dataset}_{row}.yaml"
    config = load_config(str(path), environ=ENV)
    assert config.data.dataset == dataset and config.model.name == row and config.k == 20
    assert config.data.path == ENV["DATA_DIR"] and config.output == ENV["OUTPUT"]
    for job in ("prepare", "train", "evaluate"):
        validate(config, job)
    assert configured_params(build_estimator(config)) == configured_params(registry.build_estimator(row, config.seed))


def test_every_benchmark_row_has_a_config_on_ml_1m_and_ml_100k():
    for dataset in DATASETS:
        for row in registry.DEFAULT_MODELS:
            assert (CONF / f"{dataset}_{row}.yaml").is_file(), f"missing jobs/conf/{dataset}_{row}.yaml"


# -- the jobs, end to end -----------------------------------------------------------------------------------


def write_tiny_ml1m(folder: Path) -> Path:
    """30 users × 12 events over 40 movies, in ml-1m's native '::' files."""
    rng = np.random.default_rng(0)
    ratings = []
    for user in range(1, 31):
        for step in range(12):
            item = (user + step) % 40 + 1 if rng.random() < 0.7 else int(rng.integers(1, 41))
            ratings.append(f"{user}::{item}::{int(rng.integers(1, 6))}::{978300000 + 60 * step + user}")
    folder.mkdir(parents=True)
    (folder / "ratings.dat").write_text("\n".join(ratings) + "\n", encoding="latin-1")
    (folder / "movies.dat").write_text(
        "\n".join(f"{i}::Movie {i} (1999)::Drama|Comedy" for i in range(1, 41)) + "\n", encoding="latin-1"
    )
    (folder / "users.dat").write_text("\n".join(f"{u}::F::25::7::0213{u}" for u in range(1, 31)) + "\n", encoding="latin-1")
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_tower_jobs")
    env = {"DATA_DIR": str(write_tiny_ml1m(root / "ml-1m")), "OUTPUT": str(root / "out")}
    return root, env


def run_jobs(monkeypatch, env, *calls):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return [job_main(job, argv) for job, argv in calls]


def lists(recommendations):
    return {r[QUERY_ID]: [(e[ITEM_ID], e["score"]) for e in r[RECOMMENDATIONS]] for r in recommendations.collect()}


@pytest.mark.slow
def test_dssm_prepare_train_evaluate_saves_reloads_and_evaluates_the_trained_model(spark, workspace, monkeypatch, capsys):
    """train.py saves the model (weights + item/vocabulary tables); evaluate.py reloads it. An independent fit with the
    same config in this process (deterministic on one process) gives the saved weights, identical recommendations
    from the reloaded model, and evaluate.py's metrics."""
    from spark_retrieval.evaluation import evaluate
    from spark_retrieval.models.base import RetrievalModel
    from spark_retrieval.models.two_tower import DSSMModel

    root, env = workspace
    conf = str(CONF / "ml-1m_dssm_softmax.yaml")
    codes = run_jobs(
        monkeypatch, env,
        ("prepare", ["--config", conf, *DSSM_SHORT, "--quiet"]),
        ("train", ["--config", conf, *DSSM_SHORT]),
        ("evaluate", ["--config", conf, *DSSM_SHORT]),
    )
    captured = capsys.readouterr()
    assert codes == [0, 0, 0], captured.err
    assert "fitting dssm_softmax" in captured.err
    printed = json.loads(captured.out.strip().splitlines()[-1])

    out = root / "out"
    saved = json.loads((out / "models" / "dssm_softmax" / "metadata.json").read_text())
    assert saved["class"].endswith("DSSMModel")
    assert {"state", "items", "seen_items", "vocabulary_item", "vocabulary_user"} <= set(saved["tables"])
    assert all((out / "models" / "dssm_softmax" / table).is_dir() for table in saved["tables"])
    assert saved["params"]["hidden_dims"] == [16, 8] and saved["params"]["loss"] == "sampled_softmax"
    assert saved["metadata"]["training"]["backend"] == "local"
    assert [h["epoch"] for h in saved["metadata"]["training"]["history"]] == [1, 2]

    metrics = json.loads((out / "metrics" / "dssm_softmax.json").read_text())
    assert metrics == printed
    assert metrics["model"] == "dssm_softmax" and metrics["dataset"] == "ml-1m" and metrics["k"] == 5
    assert metrics["queries"] > 0 and 0 < metrics["coverage"] <= 1

    train = spark.read.parquet(str(out / "split" / "train"))
    test = spark.read.parquet(str(out / "split" / "test"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    fitted = build_estimator(load_config(conf, DSSM_SHORT[1::2])).fit(train)
    assert fitted.metadata["training"]["parameter_hashes"] == saved["metadata"]["training"]["parameter_hashes"]

    loaded = RetrievalModel.load(str(out / "models" / "dssm_softmax"))
    assert isinstance(loaded, DSSMModel)
    assert lists(loaded.recommend(test, 5)) == lists(fitted.recommend(test, 5))
    embeddings = loaded.item_embeddings()
    assert embeddings.count() == train.select(ITEM_ID).distinct().count()
    assert len(embeddings.first()["vector"]) == 8
    expected = evaluate(fitted.recommend(test, 5), test, k=5, catalog=train.select(ITEM_ID).distinct())
    assert {key: metrics[key] for key in METRICS} == pytest.approx({key: expected[key] for key in METRICS})


@pytest.mark.slow
def test_simplex_trains_in_process_and_evaluates_under_spark_submit(spark, workspace, monkeypatch, capsys):
    """SimpleX through train.py, then evaluate.py in a fresh spark-submit process: the saved model stands alone."""
    root, env = workspace
    conf = str(CONF / "ml-1m_simplex_ccl.yaml")
    out = root / "out"
    calls = [("train", ["--config", conf, *SIMPLEX_SHORT, "--quiet"])]
    if not (out / "split" / "test").is_dir():
        calls.insert(0, ("prepare", ["--config", conf, *SIMPLEX_SHORT, "--quiet"]))
    codes = run_jobs(monkeypatch, env, *calls)
    assert codes == [0] * len(calls), capsys.readouterr().err
    saved = json.loads((out / "models" / "simplex_ccl" / "metadata.json").read_text())
    assert saved["class"].endswith("SimpleXModel") and "state" in saved["tables"]
    assert saved["params"]["num_negatives"] == 8 and saved["params"]["negative_weight"] == SimpleX().get("negative_weight")

    spark_submit = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
    result = subprocess.run(
        [spark_submit, "--master", "local[2]",
         "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
         "--conf", "spark.ui.enabled=false", "--driver-memory", "1g",
         str(REPO / "jobs" / "evaluate.py"), "--config", conf, *SIMPLEX_SHORT, "--quiet"],
        env={**os.environ, **env, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
             "SPARK_LOCAL_IP": "127.0.0.1"},
        capture_output=True, text=True, timeout=600, cwd=str(root),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model"] == "simplex_ccl" and report["k"] == 5 and report["queries"] > 0
    assert json.loads((out / "metrics" / "simplex_ccl.json").read_text()) == report


@pytest.mark.slow
@requires_horovod
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # horovod's cancelled Spark job
def test_a_killed_training_rank_ends_the_train_job_with_exit_3_and_one_line(workspace, monkeypatch, capsys):
    """Rank 1 of a two-process Horovod run SIGKILLs itself in epoch 2 of 2 (the test hook in training.py):
    train.py exits 3 with one ``error:`` line naming the rank, the epoch and the checkpoint, and publishes no
    model; the same command run again resumes from that checkpoint and saves the model."""
    root, env = workspace
    conf = str(CONF / "ml-1m_simplex_ccl.yaml")
    out, checkpoints = root / "killed-out", root / "killed-checkpoints"
    env = {**env, "OUTPUT": str(out)}
    distributed = [*SIMPLEX_SHORT, "--set", "model.params.backend=horovod", "--set", "model.params.num_proc=2",
                   "--set", f"model.params.checkpoint_dir={checkpoints}", "--set", "model.params.failure_timeout=60"]
    assert run_jobs(monkeypatch, env, ("prepare", ["--config", conf, *SIMPLEX_SHORT, "--quiet"])) == [0]
    monkeypatch.setenv(KILL_VARIABLE, "1:2:2")  # rank 1, epoch 2, step 2
    codes = run_jobs(monkeypatch, env, ("train", ["--config", conf, *distributed, "--quiet"]))
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert codes == [3], stderr[-3000:]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr[-3000:]
    for expected in ("simplex training failed during epoch 2/2", "rank 1", "SIGKILL",
                     f"{checkpoints}/checkpoint.pt", "resume from epoch 2"):
        assert expected in errors[0], errors[0]
    assert (out / "split" / "train").is_dir() and not (out / "models").exists()

    monkeypatch.delenv(KILL_VARIABLE)
    assert run_jobs(monkeypatch, env, ("train", ["--config", conf, *distributed, "--quiet"])) == [0]
    saved = json.loads((out / "models" / "simplex_ccl" / "metadata.json").read_text())
    assert saved["metadata"]["training"]["resumed_from_epoch"] == 1
    assert [h["epoch"] for h in saved["metadata"]["training"]["history"]] == [1, 2]
