import datetime
import uuid

import pytest

from spark_retrieval.data import load_interactions, validate_interactions
from spark_retrieval.errors import DataNotFoundError, EmptyDataError, InvalidParameterError, MalformedDataError

SCHEMA = "user_id long, item_id long, rating double, timestamp long"
EXPECTED_TYPES = [("user_id", "bigint"), ("item_id", "bigint"), ("rating", "double"), ("timestamp", "bigint")]


def write_csv(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_parquet_with_column_mapping_and_narrow_types(spark, tmp_path):
    raw = spark.createDataFrame(
        [(1, 10, 4.5, 1_000), (2, 20, 3.0, 2_000)], "uid int, movie int, stars float, ts int"
    )
    raw.write.parquet(str(tmp_path / "events"))
    columns = {"user_id": "uid", "item_id": "movie", "rating": "stars", "timestamp": "ts"}
    df = load_interactions(spark, str(tmp_path / "events"), columns=columns)
    assert df.dtypes == EXPECTED_TYPES
    assert sorted(tuple(r) for r in df.collect()) == [(1, 10, 4.5, 1_000), (2, 20, 3.0, 2_000)]


def test_parquet_timestamp_column_becomes_seconds(spark, tmp_path):
    moment = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    spark.createDataFrame([(1, 2, 5.0, moment)], "user_id long, item_id long, rating double, timestamp timestamp").write.parquet(
        str(tmp_path / "events")
    )
    assert load_interactions(spark, str(tmp_path / "events")).first()["timestamp"] == int(moment.timestamp())


def test_csv_with_options_and_mapping(spark, tmp_path):
    path = write_csv(tmp_path / "events.tsv", "u\ti\tr\tt\n1\t10\t4.0\t100\n2\t11\t3.5\t200\n")
    df = load_interactions(spark, path, format="csv", columns={"user_id": "u", "item_id": "i", "rating": "r", "timestamp": "t"}, sep="\t")
    assert df.dtypes == EXPECTED_TYPES
    assert sorted(tuple(r) for r in df.collect()) == [(1, 10, 4.0, 100), (2, 11, 3.5, 200)]


def test_missing_path(spark, tmp_path):
    with pytest.raises(DataNotFoundError, match="nowhere"):
        load_interactions(spark, str(tmp_path / "nowhere"))


def test_missing_column_names_it_and_the_source(spark, tmp_path):
    path = write_csv(tmp_path / "events.csv", "user_id,item_id,rating\n1,2,3.0\n")
    with pytest.raises(MalformedDataError, match=r"events\.csv has no column 'timestamp'"):
        load_interactions(spark, path, format="csv")
    with pytest.raises(MalformedDataError, match=r"no column 'uid' \(mapped to user_id\)"):
        load_interactions(spark, path, format="csv", columns={"user_id": "uid"})


def test_non_numeric_rating_names_file_and_line(spark, tmp_path):
    path = write_csv(tmp_path / "events.csv", "user_id,item_id,rating,timestamp\n1,2,3.0,10\n1,3,great,11\n1,4,2.0,12\n")
    with pytest.raises(MalformedDataError, match=r"1 row\(s\) with a missing, non-numeric or NaN rating.*events\.csv line 3"):
        load_interactions(spark, path, format="csv")


def test_missing_id_names_file_and_line(spark, tmp_path):
    path = write_csv(tmp_path / "events.csv", "user_id,item_id,rating,timestamp\n1,2,3.0,10\n1,3,4.0,11\n,4,2.0,12\n")
    with pytest.raises(MalformedDataError, match=r"missing or non-integer user_id.*events\.csv line 4"):
        load_interactions(spark, path, format="csv")


def test_line_numbers_are_exact_across_many_splits(spark, tmp_path):
    lines = ["user_id,item_id,rating,timestamp"] + [f"{u},{u % 97},4.0,{1_000 + u}" for u in range(3_000)]
    lines[2_345] = "7,-5,4.0,1000"
    path = write_csv(tmp_path / "events.csv", "\n".join(lines) + "\n")
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "4096")
    try:
        assert spark.read.text(path).rdd.getNumPartitions() > 5
        with pytest.raises(MalformedDataError, match=r"1 row\(s\) with a negative item_id.*events\.csv line 2346\b"):
            load_interactions(spark, path, format="csv")
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)


def test_empty_file_and_header_only(spark, tmp_path):
    with pytest.raises(EmptyDataError):
        load_interactions(spark, write_csv(tmp_path / "empty.csv", ""), format="csv")
    with pytest.raises(EmptyDataError):
        load_interactions(spark, write_csv(tmp_path / "header.csv", "user_id,item_id,rating,timestamp\n"), format="csv")


def test_millisecond_timestamps(spark, tmp_path):
    path = write_csv(tmp_path / "events.csv", "user_id,item_id,rating,timestamp\n1,2,3.0,1537799250000\n")
    with pytest.raises(MalformedDataError, match="milliseconds"):
        load_interactions(spark, path, format="csv")


def test_validate_reports_every_problem_at_once(spark):
    df = spark.createDataFrame(
        [(1, 2, 3.0, 10), (-1, 2, 3.0, 10), (1, None, float("nan"), 10), (1, 2, None, 10)], SCHEMA
    )
    with pytest.raises(MalformedDataError) as error:
        validate_interactions(df, "my events")
    message = str(error.value)
    assert message.startswith("my events: ")
    assert "1 row(s) with a negative user_id" in message
    assert "1 row(s) with a missing or non-integer item_id" in message
    assert "2 row(s) with a missing, non-numeric or NaN rating" in message


def test_validate_casts_and_rejects_text_ratings(spark):
    ok = spark.createDataFrame([("1", "2", "4.5", "10", "extra")], "user_id string, item_id string, rating string, timestamp string, x string")
    assert validate_interactions(ok, "strings").dtypes == EXPECTED_TYPES
    bad = spark.createDataFrame([(1, 2, "five", 10)], "user_id long, item_id long, rating string, timestamp long")
    with pytest.raises(MalformedDataError, match="non-numeric"):
        validate_interactions(bad, "strings")


def test_validate_missing_column_and_empty(spark):
    with pytest.raises(MalformedDataError, match="my events has no column 'rating'"):
        validate_interactions(spark.createDataFrame([(1, 2, 3)], "user_id long, item_id long, timestamp long"), "my events")
    with pytest.raises(EmptyDataError, match="my events"):
        validate_interactions(spark.createDataFrame([], SCHEMA), "my events")


def jobs_run_by(spark, action):
    tracker = spark.sparkContext.statusTracker()
    group = f"count-jobs-{uuid.uuid4().hex}"
    spark.sparkContext.setJobGroup(group, group)
    try:
        action()
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    return len(tracker.getJobIdsForGroup(group))


def test_validation_is_a_single_aggregation(spark, tmp_path):
    df = spark.createDataFrame([(u, u % 7, 4.0, 100 + u) for u in range(200)], SCHEMA)
    df.write.parquet(str(tmp_path / "events"))
    events = spark.read.parquet(str(tmp_path / "events"))
    one_aggregation = jobs_run_by(spark, lambda: events.agg({"rating": "max"}).first())
    assert jobs_run_by(spark, lambda: validate_interactions(events, "events")) == one_aggregation


def test_bad_parameters(spark, tmp_path):
    with pytest.raises(InvalidParameterError, match="format"):
        load_interactions(spark, str(tmp_path), format="json")
    with pytest.raises(InvalidParameterError, match="user"):
        load_interactions(spark, str(tmp_path), columns={"user": "uid"})
