"""``spark-retrieval tune`` and ``jobs/tune.py`` on a tiny ml-1m, then ``benchmark --params tuned.json`` on the test set once."""

import json

import pytest

from spark_retrieval.cli import main
from spark_retrieval.jobs import main as job_main
from test_cli import write_ml1m

MODELS = "global_hot,item_cf"


@pytest.fixture(scope="module")
def tuned(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    data = write_ml1m(root / "ml-1m")
    out = root / "tuning"
    code = main(["tune", "--dataset", "ml-1m", "--data-dir", str(data), "--models", MODELS, "--trials", "2",
                 "--k", "5", "--output", str(out), "--quiet"])
    return code, data, out


def test_tune_writes_tuned_json_plot_and_study(tuned):
    code, _, out = tuned
    assert code == 0
    document = json.loads((out / "tuned.json").read_text())
    assert document["metric"] == "ndcg" and document["k"] == 5 and document["trials"] == 2
    assert set(document["models"]) == {"global_hot", "item_cf"}
    assert document["models"]["item_cf"]["trials"] == 2 and "k_neighbours" in document["models"]["item_cf"]["params"]
    assert (out / "tuning.png").stat().st_size > 0 and (out / "study.db").is_file()


def test_benchmark_with_tuned_params_uses_them_and_says_so(spark, tuned, tmp_path, capsys):
    _, data, out = tuned
    tuned_item_cf = json.loads((out / "tuned.json").read_text())["models"]["item_cf"]
    code = main(["benchmark", "--dataset", "ml-1m", "--data-dir", str(data), "--models", f"{MODELS},swing", "--k", "5",
                 "--params", str(out / "tuned.json"), "--output", str(tmp_path / "bench"), "--quiet", "--bootstrap", "0"])
    assert code == 0, capsys.readouterr().err
    rows = {row["model"]: row for row in json.loads((tmp_path / "bench" / "results.json").read_text())["results"]}
    assert rows["item_cf"]["params_source"] == "tuned"
    assert rows["item_cf"]["validation_score"] == pytest.approx(tuned_item_cf["score"])
    assert {key: rows["item_cf"]["params"][key] for key in tuned_item_cf["params"]} == tuned_item_cf["params"]
    assert rows["swing"]["params_source"] == "defaults" and "validation_score" not in rows["swing"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--trials", "0"], "trials must be a positive integer"),
        (["--metric", "map"], "metric"),
        (["--models", "nope"], "unknown model"),
        (["--k", "20,100"], "tune scores one list length"),
        (["--max-epochs", "0"], "max_epochs must be a positive integer"),
        (["--patience", "0"], "patience must be a positive integer"),
    ],
)
def test_bad_tune_arguments_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    base = ["tune", "--dataset", "ml-1m", "--data-dir", str(tmp_path), "--output", str(tmp_path / "out")]
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_tuned_json_with_an_unknown_param_is_exit_2_before_spark(tmp_path, capsys):
    bad = tmp_path / "tuned.json"
    bad.write_text(json.dumps({"models": {"item_cf": {"params": {"k_neighbors": 5}, "score": 0.1}}}))
    code = main(["benchmark", "--models", "item_cf", "--params", str(bad), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "k_neighbors" in err and str(bad) in err and len(err.strip().splitlines()) == 1


def test_tune_job_reads_only_the_prepared_train_split(spark, tmp_path, monkeypatch, capsys):
    data = write_ml1m(tmp_path / "ml-1m")
    config = tmp_path / "conf.yaml"
    config.write_text(f"data: {{dataset: ml-1m, path: '{data}'}}\nmodels: item_cf\ntrials: 1\nk: 5\noutput: '{tmp_path / 'out'}'\n")
    assert job_main("prepare", ["--config", str(config), "--quiet"]) == 0
    test_split = tmp_path / "out" / "split" / "test"
    for part in test_split.glob("*.parquet"):
        part.write_bytes(b"not parquet")  # any read of the test split would fail the job
    assert job_main("tune", ["--config", str(config), "--quiet"]) == 0, capsys.readouterr().err
    document = json.loads((tmp_path / "out" / "tuning" / "tuned.json").read_text())
    assert document["models"]["item_cf"]["trials"] == 1


def test_a_tune_job_with_a_bad_epoch_limit_is_exit_2(tmp_path, capsys):
    config = tmp_path / "conf.yaml"
    config.write_text(f"data: {{dataset: ml-1m, path: '{tmp_path}'}}\nmodels: dssm_softmax\nmax_epochs: 0\noutput: '{tmp_path / 'out'}'\n")
    assert job_main("tune", ["--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "max_epochs must be a positive integer" in err and len(err.strip().splitlines()) == 1
