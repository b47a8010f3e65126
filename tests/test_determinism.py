"""Two runs with the same seed give identical outputs, for every classic model (two-towers: their own test).

"Identical" (docs/reliability.md): the saved tables hold the same rows, compared sorted and by ``repr``
(every float bit, -0.0 included; parquet part-file names are random and are not compared); the
recommendations are the same rows; the metrics JSON that ``jobs/evaluate.py`` writes is the same bytes; a
benchmark report (``results.json``) is the same bytes once its wall-clock fields are removed.
"""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from spark_retrieval.columns import QUERY_ID
from spark_retrieval.data.movielens import BUNDLED_DIR
from spark_retrieval.jobs import main as job_main
from spark_retrieval.models.base import METADATA_FILE, RetrievalModel
from test_cli import write_ml1m

CLASSIC_MODELS = ("global_hot", "item_cf", "swing", "als")
USERS = 100  # the first users of the bundled ml-latest-small: ~15k events, every model in seconds
SEED = 7
# Seeded samples switched on so that the seed matters for the item-to-item models too.
PARAMS = {
    "global_hot": "{}",
    "item_cf": "{max_items_per_user: 40}",
    "swing": "{max_users_per_item: 20}",
    "als": "{rank: 16, max_iter: 5}",
}
WALL_CLOCK = ("fit_seconds", "recommend_seconds", "created")


def sorted_rows(frame) -> str:
    """A table's content as text: rows sorted, each float written exactly."""
    return repr(sorted(repr(row) for row in frame.collect()))


@pytest.fixture(scope="module")
def workspace(spark, tmp_path_factory):
    """The first USERS users of ml-latest-small as ``ratings.csv`` / ``movies.csv``, a config, and the split
    prepared twice (runs ``a`` and ``b``), which must already be identical."""
    root = tmp_path_factory.mktemp("determinism")
    data = root / "ml-latest-small"
    data.mkdir()
    ratings = pq.read_table(BUNDLED_DIR / "ratings.parquet").to_pandas()
    ratings[ratings["userId"] <= USERS].to_csv(data / "ratings.csv", index=False)
    pq.read_table(BUNDLED_DIR / "movies.parquet").to_pandas().to_csv(data / "movies.csv", index=False)
    config = root / "conf.yaml"
    config.write_text(
        f"data: {{dataset: ml-latest-small, path: '{data}'}}\n"
        "model: {name: global_hot}\n"
        f"k: 20\nseed: {SEED}\noutput: '${{OUTPUT}}'\n"
    )
    splits = []
    for run in ("a", "b"):
        os.environ["OUTPUT"] = str(root / run)
        assert job_main("prepare", ["--config", str(config), "--quiet"]) == 0
        splits.append([sorted_rows(spark.read.parquet(str(root / run / "split" / part))) for part in ("train", "test")])
    assert splits[0] == splits[1]
    yield root, str(config)
    os.environ.pop("OUTPUT", None)


@pytest.mark.slow
@pytest.mark.parametrize("model", list(PARAMS))
def test_same_seed_twice_gives_identical_tables_recommendations_and_metrics(spark, workspace, model, capsys):
    root, config = workspace
    overrides = ["--set", f"model.name={model}", "--set", f"model.params={PARAMS[model]}", "--quiet"]
    runs = []
    for run in ("a", "b"):
        os.environ["OUTPUT"] = str(root / run)
        assert job_main("train", ["--config", config, *overrides]) == 0, capsys.readouterr().err
        assert job_main("evaluate", ["--config", config, *overrides]) == 0, capsys.readouterr().err
        saved = root / run / "models" / model
        metadata = json.loads((saved / METADATA_FILE).read_text())
        metadata.pop("files")  # part-file names: random by design
        loaded = RetrievalModel.load(str(saved))
        test = spark.read.parquet(str(root / run / "split" / "test"))
        runs.append({
            "metadata": metadata,
            "tables": {name: sorted_rows(spark.read.parquet(str(saved / name))) for name in metadata["tables"]},
            "recommendations": sorted_rows(loaded.recommend(test, 20).orderBy(QUERY_ID)),
            "metrics": (root / run / "metrics" / f"{model}.json").read_bytes(),
        })
    first, second = runs
    assert first["metadata"] == second["metadata"]
    assert first["metadata"]["params"].get("seed", SEED) == SEED
    for name in first["tables"]:
        assert first["tables"][name] == second["tables"][name], f"table {name} differs between two runs"
    assert first["recommendations"] == second["recommendations"]
    assert first["metrics"] == second["metrics"]
    assert json.loads(first["metrics"])["queries"] > 0


def without_wall_clock(report: dict) -> bytes:
    report = {key: value for key, value in report.items() if key not in WALL_CLOCK}
    report["results"] = [{key: value for key, value in row.items() if key not in WALL_CLOCK} for row in report["results"]]
    return json.dumps(report, indent=2).encode()


@pytest.mark.slow
def test_benchmark_in_two_processes_gives_the_same_report(tmp_path):
    """Two separate processes (two JVMs, two Python hash seeds): the same results.json but for wall-clock fields.
    The classic rows; the two-tower rows' run-to-run identity is test_two_tower_determinism.py's."""
    data = write_ml1m(tmp_path / "ml-1m")
    executable = os.path.join(os.path.dirname(sys.executable), "spark-retrieval")
    runs = {}
    for run in ("a", "b"):  # side by side: neither run can reuse anything of the other
        runs[run] = subprocess.Popen(
            [executable, "benchmark", "--dataset", "ml-1m", "--data-dir", str(data), "--k", "5",
             "--models", ",".join(CLASSIC_MODELS),
             "--seed", str(SEED), "--bootstrap", "100", "--master", "local[2]", "--output", str(tmp_path / run), "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            env={**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
                 "SPARK_LOCAL_IP": "127.0.0.1"},
        )
    reports = []
    for run, process in runs.items():
        _, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr[-3000:]
        reports.append(json.loads((tmp_path / run / "results.json").read_text()))
    assert [row["model"] for row in reports[0]["results"]] == ["global_hot", "item_cf", "swing", "als"]
    assert all("ci" in row and "vs_best" in row for row in reports[0]["results"])  # the bootstrap is compared too
    assert without_wall_clock(reports[0]) == without_wall_clock(reports[1])
