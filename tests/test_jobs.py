import json
import os
import subprocess
import sys

import pytest

import pyspark
from spark_retrieval.cli import main as cli_main
from spark_retrieval.jobs import main as job_main
from test_cli import write_ml1m

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("precision", "recall", "map", "ndcg", "hit_rate", "coverage", "queries")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny ml-1m, a config using ${DATA_DIR} and ${OUTPUT}, and the environment that fills them."""
    root = tmp_path_factory.mktemp("jobs")
    data = write_ml1m(root / "ml-1m")
    config = root / "conf.yaml"
    config.write_text(
        "data: {dataset: ml-1m, path: '${DATA_DIR}'}\n"
        "model: {name: item_cf, params: {k_neighbours: 100}}\n"
        "k: 5\n"
        "output: '${OUTPUT}'\n"
    )
    env = {"DATA_DIR": str(data), "OUTPUT": str(root / "out")}
    return root, str(config), env


def run_jobs(monkeypatch, env, *calls):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return [job_main(job, argv) for job, argv in calls]


@pytest.fixture(scope="module")
def jobs_run(spark, workspace):
    """prepare → train → evaluate for Item CF and ALS, once for every test that reads their outputs."""
    root, config, env = workspace
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run_jobs(
            monkeypatch,
            env,
            ("prepare", ["--config", config, "--quiet"]),
            ("train", ["--config", config, "--quiet"]),
            ("evaluate", ["--config", config, "--quiet"]),
            ("train", ["--config", config, "--quiet", "--set", "model.name=als", "--set", "model.params={rank: 4, max_iter: 3}"]),
            ("evaluate", ["--config", config, "--quiet", "--set", "model.name=als", "--set", "model.params={}"]),
        )


def test_prepare_train_evaluate_match_the_benchmark(spark, workspace, jobs_run):
    root, config, env = workspace
    assert jobs_run == [0] * 5
    out = root / "out"
    assert (out / "split" / "train").is_dir() and (out / "split" / "test").is_dir()
    saved = json.loads((out / "models" / "item_cf" / "metadata.json").read_text())
    assert saved["params"]["k_neighbours"] == 100 and saved["tables"] == ["neighbours"]
    assert json.loads((out / "models" / "als" / "metadata.json").read_text())["params"]["rank"] == 4

    assert cli_main(["benchmark", "--dataset", "ml-1m", "--data-dir", env["DATA_DIR"], "--k", "5",
                     "--models", "item_cf", "--output", str(root / "bench"), "--quiet", "--bootstrap", "0"]) == 0
    expected = json.loads((root / "bench" / "results.json").read_text())["results"][0]
    metrics = json.loads((out / "metrics" / "item_cf.json").read_text())
    assert metrics["model"] == "item_cf" and metrics["k"] == 5
    assert {key: metrics[key] for key in METRICS} == pytest.approx({key: expected[key] for key in METRICS})
    assert json.loads((out / "metrics" / "als.json").read_text())["queries"] == expected["queries"]


def test_benchmark_job_writes_the_report(spark, workspace, monkeypatch, capsys):
    root, config, env = workspace
    [code] = run_jobs(monkeypatch, env, ("benchmark", ["--config", config, "--set", "models=global_hot", "--set", "bootstrap=0", "--quiet"]))
    assert code == 0, capsys.readouterr().err
    assert "| global_hot |" in capsys.readouterr().out
    report = json.loads((root / "out" / "benchmark" / "results.json").read_text())
    assert [row["model"] for row in report["results"]] == ["global_hot"] and report["k"] == 5


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--set", "model.params.k_neigbours=5"], {}, "unknown key 'model.params.k_neigbours' for item_cf"),
        (["--set", "k=five"], {}, "k: expected an integer, got str 'five'"),
        ([], {"DATA_DIR": None}, "data.path: environment variable DATA_DIR is not set"),
        (["--nope"], {}, "unrecognized arguments: --nope"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(workspace, monkeypatch, capsys, argv, env, message):
    root, config, base_env = workspace
    for name, value in {**base_env, **env}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert job_main("train", ["--config", config, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_evaluate_under_spark_submit(spark, workspace, jobs_run):
    """One real spark-submit (local[2], loopback only): evaluates the model the in-process jobs saved."""
    root, config, env = workspace
    assert jobs_run == [0] * 5
    spark_submit = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
    in_process = json.loads((root / "out" / "metrics" / "item_cf.json").read_text())
    result = subprocess.run(
        [spark_submit, "--master", "local[2]",
         "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
         "--conf", "spark.ui.enabled=false", "--driver-memory", "1g",
         os.path.join(REPO, "jobs", "evaluate.py"), "--config", config, "--quiet"],
        env={**os.environ, **env, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
             "SPARK_LOCAL_IP": "127.0.0.1"},
        capture_output=True, text=True, timeout=300, cwd=str(root),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Means over partitions: equal up to the order of floating-point additions.
    assert json.loads(result.stdout.strip().splitlines()[-1]) == pytest.approx(in_process)
    assert json.loads((root / "out" / "metrics" / "item_cf.json").read_text()) == pytest.approx(in_process)


def test_a_merged_model_trains_saves_and_evaluates_as_a_job(spark, workspace, jobs_run, monkeypatch):
    root, config, env = workspace
    merged = ["--set", "model.name=multi_channel_rrf", "--set", "model.params={channels: [item_cf, global_hot]}"]
    codes = run_jobs(monkeypatch, env, ("train", ["--config", config, "--quiet", *merged]),
                     ("evaluate", ["--config", config, "--quiet", *merged]))
    assert codes == [0, 0]
    saved = root / "out" / "models" / "multi_channel_rrf"
    assert sorted(p.name for p in (saved / "channels").iterdir()) == ["global_hot", "item_cf"]
    metrics = json.loads((root / "out" / "metrics" / "multi_channel_rrf.json").read_text())
    assert metrics["model"] == "multi_channel_rrf" and metrics["queries"] == json.loads((root / "out" / "metrics" / "item_cf.json").read_text())["queries"]
