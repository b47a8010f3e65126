"""A user's own event log: string ids, any timestamp form, renamed columns, no rating, side tables."""

import csv
import datetime
import json
import os
import random
import subprocess
import sys

import pytest
from pyspark.sql import functions as F

import pyspark
from spark_retrieval.benchmark import open_data, run_benchmark
from spark_retrieval.cli import main
from spark_retrieval.data.event_log import EventLog, dense_index, load_event_log, parse_columns, timestamp_seconds
from spark_retrieval.data.movielens import load_movielens
from spark_retrieval.errors import InvalidParameterError, MalformedDataError
from spark_retrieval.models.registry import DEFAULT_MODELS, MODELS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = "user_id=uid,item_id=sku,timestamp=ts"
START = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def write_click_log(folder, users=30, items=24, seed=0):
    """clicks.csv (uid, sku, ts as zone-less ISO strings, no rating) and items.json (sku, genres list)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "clicks.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["uid", "sku", "ts"])
        for user in range(users):
            for event in range(rng.randint(6, 12)):
                when = START + datetime.timedelta(minutes=user * 1000 + event * 7)
                writer.writerow([f"user-{user:03d}", f"sku-{rng.randint(0, items - 1):03d}", when.strftime("%Y-%m-%dT%H:%M:%S")])
    with open(folder / "items.json", "w") as stream:
        for item in range(items):
            stream.write(json.dumps({"sku": f"sku-{item:03d}", "genres": ["odd", "any"] if item % 2 else ["even"]}) + "\n")
    return folder / "clicks.csv", folder / "items.json"


@pytest.fixture(scope="module")
def click_log(tmp_path_factory):
    return write_click_log(tmp_path_factory.mktemp("clicks"))


def test_load_indexes_string_ids_in_order_reads_iso_times_as_utc_and_treats_every_event_as_positive(spark, click_log):
    clicks, items = click_log
    loaded = load_event_log(spark, EventLog(str(clicks), columns=parse_columns(COLUMNS), items=str(items)))
    assert loaded.implicit and loaded.positive_threshold(None, 2.0) == 0.0
    assert loaded.description["timestamps"].startswith("ISO-8601") and loaded.description["format"] == "csv"
    index = {row["original_id"]: row["item_id"] for row in loaded.items.table.collect()}
    assert sorted(index, key=index.get) == sorted(index) and sorted(index.values()) == list(range(len(index)))
    first = loaded.ratings.join(loaded.users.table, "user_id").where(F.col("original_id") == "user-000")
    assert first.agg(F.min("timestamp")).first()[0] == int(START.timestamp())  # UTC, whatever the session zone
    assert {row["rating"] for row in loaded.ratings.select("rating").distinct().collect()} == {1.0}
    genres = loaded.item_features.join(loaded.items.table, "item_id").where(F.col("original_id") == "sku-001")
    assert genres.first()["genres"] == ["odd", "any"]
    with pytest.raises(InvalidParameterError, match="no rating column"):
        loaded.positive_threshold(3.0, 2.0)
    lists = spark.createDataFrame([(0, [index["sku-003"], index["sku-001"]]), (1, [])], "user_id long, items array<long>")
    decoded = {row["user_id"]: row["items"] for row in loaded.users.decode(loaded.items.decode(lists, "items")).collect()}
    assert decoded == {"user-000": ["sku-003", "sku-001"], "user-001": []}


def test_a_models_lists_and_neighbours_decode_to_the_original_ids(spark, click_log):
    from spark_retrieval.models import ItemCF

    clicks, _ = click_log
    loaded = load_event_log(spark, EventLog(str(clicks), columns=parse_columns(COLUMNS)))
    model = ItemCF().fit(loaded.ratings)
    neighbours = model.similar_items(3)
    decoded = loaded.items.decode(loaded.items.decode(neighbours, "neighbours"))
    originals = {row["item_id"]: row["original_id"] for row in loaded.items.table.collect()}
    expected = {originals[row["item_id"]]: [(originals[n["item_id"]], n["score"]) for n in row["neighbours"]]
                for row in neighbours.collect()}
    found = {row["item_id"]: [(n["item_id"], n["score"]) for n in row["neighbours"]] for row in decoded.collect()}
    assert found == expected and all(isinstance(item, str) for item in found)


def test_numbers_index_by_value_and_strings_by_bytes(spark):
    numbers = dense_index(spark.createDataFrame([(v,) for v in (10, 9, 3_000_000_000, 9)], "original_id long"), "item_id")
    assert [r["original_id"] for r in numbers.table.orderBy("item_id").collect()] == [9, 10, 3_000_000_000]
    strings = dense_index(spark.createDataFrame([(v,) for v in ("10", "9", "a")], "original_id string"), "item_id")
    assert [r["original_id"] for r in strings.table.orderBy("item_id").collect()] == ["10", "9", "a"]


@pytest.mark.parametrize(
    "values, kind, form, seconds",
    [
        ([1_700_000_000, 1_700_000_001], "long", "epoch seconds", [1_700_000_000, 1_700_000_001]),
        ([1_700_000_000_123, 1_700_000_001_999], "long", "epoch milliseconds", [1_700_000_000, 1_700_000_001]),
        (["1700000000", "1700000001.5"], "string", "epoch seconds", [1_700_000_000, 1_700_000_001]),
        (["2023-11-14T22:13:20Z", "2023-11-14 23:13:20+01:00", "2023-11-14T22:13:20", "2023-11-15"], "string",
         "ISO-8601", [1_700_000_000, 1_700_000_000, 1_700_000_000, 1_700_006_400]),
        ([datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.timezone.utc)], "timestamp", "Spark timestamps", [1_700_000_000]),
        ([datetime.date(2023, 11, 15)], "date", "Spark dates", [1_700_006_400]),
    ],
)
def test_timestamp_forms_become_epoch_seconds(spark, values, kind, form, seconds):
    events = spark.createDataFrame([(v,) for v in values], f"ts {kind}")
    found, column = timestamp_seconds(events, "ts", "log", "ts")
    assert found.startswith(form)
    assert [row[0] for row in events.select(column).collect()] == seconds


@pytest.mark.parametrize(
    "values, kind, message",
    [
        (["2023-11-14T22:13:20Z", "yesterday", "later"], "string", "2 value(s) are neither epoch seconds/milliseconds nor ISO-8601 date-times, e.g. 'later'"),
        ([True], "boolean", "column ts (timestamp) is boolean"),
        (["1700000000", "2023-11-14T22:13:20Z"], "string", "mixes numbers and ISO-8601 strings"),
    ],
)
def test_a_timestamp_column_of_no_accepted_form_is_one_error_naming_it(spark, values, kind, message):
    events = spark.createDataFrame([(v,) for v in values], f"ts {kind}")
    with pytest.raises(MalformedDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        timestamp_seconds(events, "ts", "log", "ts")


def test_every_row_runs_on_a_click_log_through_the_cli(spark, click_log, tmp_path, capsys):
    clicks, items = click_log
    out = tmp_path / "out"
    # The two-tower rows (and the merged rows' two-tower channel) train in this process: reading the log is what
    # is tested here, the distributed launch has its own tests (a tuned.json is how the CLI takes other
    # parameters for a row).
    in_process = tmp_path / "in_process.json"
    two_towers = [name for name in DEFAULT_MODELS if MODELS[name].family == "two_tower"]
    local = {name: {"params": {"backend": "local"}} for name in two_towers}
    for name in (name for name in DEFAULT_MODELS if MODELS[name].family == "merged"):
        channels = [c for c in MODELS[name].preset["channels"] if c in two_towers]
        local[name] = {"params": {"channel_params": {c: {"backend": "local"} for c in channels}}}
    in_process.write_text(json.dumps({"models": local}))
    code = main(["benchmark", "--interactions", str(clicks), "--columns", COLUMNS, "--items", str(items),
                 "--k", "5", "--bootstrap", "0", "--params", str(in_process), "--output", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    document = json.loads((out / "results.json").read_text())
    assert [row["model"] for row in document["results"]] == list(DEFAULT_MODELS)
    assert document["dataset"] == str(clicks) and document["positive_threshold"] == 0.0
    assert document["source"]["feedback"].startswith("implicit") and document["source"]["items"] == str(items)
    assert document["split"]["test_queries"] == document["split"]["held_out_events"] > 0
    assert all(row["queries"] == document["split"]["test_queries"] for row in document["results"])
    assert {row["model"]: row["training"]["backend"] for row in document["results"] if "training" in row} == dict.fromkeys(two_towers, "local")
    assert f"Data: {clicks} (csv; user_id=uid" in (out / "results.md").read_text()


def test_the_benchmark_job_runs_the_same_log_under_spark_submit(spark, click_log, tmp_path):
    """The job reads the log under a real spark-submit (two rows: every row reads the log the same way, the CLI
    test above runs them all)."""
    clicks, items = click_log
    config = tmp_path / "clicks.yaml"
    config.write_text(
        f"data: {{interactions: '{clicks}', columns: {{user_id: uid, item_id: sku, timestamp: ts}}, items: '{items}'}}\n"
        "models: global_hot,item_cf\nbootstrap: 0\nk: 5\noutput: '${OUTPUT}'\n"
    )
    spark_submit = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
    result = subprocess.run(
        [spark_submit, "--master", "local[2]", "--conf", "spark.driver.host=127.0.0.1",
         "--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", "spark.ui.enabled=false", "--driver-memory", "1g",
         os.path.join(REPO, "jobs", "benchmark.py"), "--config", str(config), "--quiet"],
        env={**os.environ, "OUTPUT": str(tmp_path / "out"), "PYSPARK_PYTHON": sys.executable,
             "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"},
        capture_output=True, text=True, timeout=900, cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((tmp_path / "out" / "benchmark" / "results.json").read_text())
    assert [row["model"] for row in document["results"]] == ["global_hot", "item_cf"]
    assert document["source"]["timestamps"].startswith("ISO-8601") and document["positive_threshold"] == 0.0


def write_log(folder, header, rows, name="events.csv"):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return folder / name


GOOD = [("u1", "i1", "2024-01-01T00:00:00"), ("u1", "i2", "2024-01-02T00:00:00")]


@pytest.mark.parametrize(
    "header, rows, extra, message",
    [
        (["uid", "item", "ts"], GOOD, [], "has no column 'sku' (mapped to item_id); it has uid, item, ts"),
        (["uid", "sku", "ts"], [("u1", "", "2024-01-01")], [], "1 event(s) with a missing sku (item id)"),
        (["uid", "sku", "ts"], [("u1", "i1", "soon")], [], "column ts (timestamp): 1 value(s) are neither"),
        (["uid", "sku", "ts"], [*GOOD, ("u1", "i3", "")], [], "1 event(s) with a missing ts (timestamp)"),
        (["uid", "sku", "ts"], [], [], "is empty"),
        (["uid", "sku", "ts"], GOOD, [], "none of its 1 user(s) has more than 3 events"),
        (["uid", "sku", "ts"], GOOD, ["--positive-threshold", "3"], "has no rating column, so every event is a positive"),
        (["uid", "sku", "ts", "stars"], [(*GOOD[0], "x")], ["--columns", COLUMNS + ",rating=stars"], "non-numeric or NaN stars"),
    ],
)
def test_bad_logs_are_one_line_exit_2_and_nothing_written(spark, tmp_path, capsys, header, rows, extra, message):
    log = write_log(tmp_path / "log", header, rows)
    out = tmp_path / "out"
    columns = [] if "--columns" in extra else ["--columns", COLUMNS]
    assert main(["benchmark", "--interactions", str(log), *columns, *extra, "--output", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--interactions", "x.csv", "--columns", "user=uid"], "columns: unknown name(s) user"),
        (["--interactions", "x.csv", "--dataset", "ml-1m"], "drop --dataset"),
        (["--columns", COLUMNS], "--columns describes an event log: give --interactions too"),
        (["--interactions", "x.csv", "--format", "xml"], "invalid choice"),
    ],
)
def test_bad_log_options_fail_before_spark(tmp_path, capsys, args, message):
    assert main(["benchmark", *args, "--output", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_ml_latest_small_as_a_string_id_iso_time_log_gives_the_same_metrics(spark, tmp_path):
    """The bundled ratings rewritten as a user's log: ids as zero-padded strings (so their byte order is the
    numeric order and every tie-break is the same), ISO-8601 times, renamed columns, ratings kept."""
    ratings = load_movielens(spark, "ml-latest-small").ratings
    log = ratings.select(
        F.format_string("u%07d", "user_id").alias("account"),
        F.format_string("m%07d", "item_id").alias("title"),
        F.col("rating").alias("stars"),
        F.date_format(F.timestamp_seconds("timestamp"), "yyyy-MM-dd'T'HH:mm:ssXXX").alias("when"),
    )
    log.coalesce(1).write.option("header", True).csv(str(tmp_path / "log"))
    models = ["global_hot", "item_cf", "swing"]  # deterministic rows: equal to the last bit
    reference = run_benchmark(spark, ratings, "ml-latest-small", models, bootstrap=0)
    data = open_data(
        spark, log=EventLog(str(tmp_path / "log"), "csv", {"user_id": "account", "item_id": "title", "rating": "stars", "timestamp": "when"}),
    )
    rewritten = run_benchmark(spark, data.ratings, "log", models, positive_threshold=data.positive_threshold, bootstrap=0)
    assert rewritten.split == reference.split
    for ours, theirs in zip(rewritten.results, reference.results):
        for metric in ("precision", "recall", "map", "ndcg", "hit_rate", "coverage", "queries"):
            assert ours[metric] == theirs[metric], (ours["model"], metric)


def test_prepare_keeps_the_id_indexes_and_the_threshold_for_the_later_jobs(spark, click_log, tmp_path, monkeypatch):
    from spark_retrieval.jobs import main as job_main

    clicks, items = click_log
    config = tmp_path / "clicks.yaml"
    config.write_text(
        f"data: {{interactions: '{clicks}', columns: {{user_id: uid, item_id: sku, timestamp: ts}}}}\n"
        f"model: {{name: item_cf}}\nk: 5\noutput: '{tmp_path / 'out'}'\n"
    )
    assert [job_main(job, ["--config", str(config), "--quiet"]) for job in ("prepare", "train", "evaluate")] == [0, 0, 0]
    split = tmp_path / "out" / "split"
    index = spark.read.parquet(str(split / "ids" / "items"))
    assert index.count() == 24 and index.where(F.col("original_id") == "sku-000").first()["item_id"] == 0
    assert spark.read.parquet(str(split / "source")).first()["positive_threshold"] == 0.0
    metrics = json.loads((tmp_path / "out" / "metrics" / "item_cf.json").read_text())
    assert metrics["dataset"] == str(clicks) and metrics["queries"] == spark.read.parquet(str(split / "test")).count()


def test_tune_reads_the_same_log(spark, click_log, tmp_path, capsys):
    clicks, _ = click_log
    out = tmp_path / "tuning"
    code = main(["tune", "--interactions", str(clicks), "--columns", COLUMNS, "--models", "item_cf", "--trials", "2",
                 "--k", "5", "--output", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    tuned = json.loads((out / "tuned.json").read_text())
    assert tuned["positive_threshold"] == 0.0 and tuned["models"]["item_cf"]["trials"] == 2
