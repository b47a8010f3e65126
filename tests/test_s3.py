import logging

import pytest

from spark_retrieval import s3
from spark_retrieval.config import load_config, parse_config
from spark_retrieval.errors import DataNotFoundError, OutputWriteError, UserError
from spark_retrieval.jobs import main as job_main
from test_report import PNG_SIGNATURE, sample_result

SECRET = "FAKE-secret-9f8e7d6c5b4a"
CONFIG = "data: {dataset: ml-1m, path: '${DATA_DIR:-s3a://data/ml-1m}'}\nmodel: {name: swing}\noutput: s3a://bucket/run\n"


@pytest.fixture(scope="module")
def endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws(endpoint, monkeypatch):
    """Fake credentials and the moto endpoint, through the usual AWS variables only."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    bucket = "bucket"
    s3.client().create_bucket(Bucket=bucket)
    return bucket


def test_config_round_trip():
    s3.write_bytes("s3://bucket/conf/swing.yaml", CONFIG.encode())
    from_s3 = load_config("s3://bucket/conf/swing.yaml", ["k=7"], environ={})
    assert from_s3 == parse_config(CONFIG, "local.yaml", ["k=7"], environ={})
    assert from_s3.source == "s3://bucket/conf/swing.yaml" and from_s3.data.path == "s3a://data/ml-1m"


def test_benchmark_report_uploaded_to_a_prefix():
    sample_result().write("s3://bucket/reports/run-1/")
    listed = s3.client().list_objects_v2(Bucket="bucket", Prefix="reports/run-1/")["Contents"]
    assert sorted(item["Key"] for item in listed) == [
        "reports/run-1/results.json", "reports/run-1/results.md", "reports/run-1/results.png"
    ]
    assert s3.read_bytes("s3://bucket/reports/run-1/results.png")[:8] == PNG_SIGNATURE
    assert "![results](results.png)" in s3.read_bytes("s3://bucket/reports/run-1/results.md").decode()


def test_missing_bucket_and_key_are_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match=r"s3://nobucket/a.yaml: bucket 'nobucket' does not exist"):
        load_config("s3://nobucket/a.yaml")
    with pytest.raises(DataNotFoundError, match=r"s3://bucket/none.yaml: no such object"):
        load_config("s3://bucket/none.yaml")
    monkeypatch.chdir(tmp_path)  # a report that cannot be uploaded is kept in ./spark-retrieval-fallback-*/
    with pytest.raises(OutputWriteError, match=r"s3://nobucket/r/results\.\w+: upload failed: bucket does not exist; "
                                               r"the results are kept in .*/spark-retrieval-fallback-"):
        sample_result().write("s3://nobucket/r")


def test_denied_key_is_one_line_without_the_secret(monkeypatch, capsys, caplog):
    import moto.settings

    s3.write_bytes("s3://bucket/conf/swing.yaml", CONFIG.encode())
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # enforce IAM: the fake key is unknown
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UserError) as error:
        s3.read_bytes("s3://bucket/conf/swing.yaml")
    assert "access denied (InvalidAccessKeyId)" in str(error.value)
    assert error.value.__cause__ is None and error.value.__suppress_context__

    assert job_main("train", ["--config", "s3://bucket/conf/swing.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: s3://bucket/conf/swing.yaml: access denied") and len(err.strip().splitlines()) == 1
    for text in (str(error.value), err, caplog.text):
        assert SECRET not in text


def test_cli_benchmark_output_to_s3(spark, tmp_path, capsys):
    from spark_retrieval.cli import main
    from test_cli import write_ml1m

    data = write_ml1m(tmp_path / "ml-1m")
    args = ["benchmark", "--dataset", "ml-1m", "--data-dir", str(data), "--k", "5", "--models", "global_hot", "--quiet",
            "--bootstrap", "0"]
    assert main([*args, "--output", "s3://nobucket/x"]) == 2  # checked before any work
    assert capsys.readouterr().err.strip() == "error: --output s3://nobucket/: bucket 'nobucket' does not exist"
    assert main([*args, "--output", "s3://bucket/cli/run"]) == 0, capsys.readouterr().err
    keys = [item["Key"] for item in s3.client().list_objects_v2(Bucket="bucket", Prefix="cli/run/")["Contents"]]
    assert sorted(keys) == ["cli/run/results.json", "cli/run/results.md", "cli/run/results.png"]
    assert '"global_hot"' in s3.read_bytes("s3://bucket/cli/run/results.json").decode()


def test_example_files_listed_and_read_at_s3a_uris():
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from spark_retrieval.models.two_tower.shards import FileSlice, list_parquet_files, open_filesystem, read_slice

    for part, rows in enumerate((5, 3)):
        buffer = io.BytesIO()
        pq.write_table(pa.table({"row": list(range(part * 10, part * 10 + rows))}), buffer)
        s3.write_bytes(f"s3://bucket/examples/part-{part:05d}.parquet", buffer.getvalue())
    s3.write_bytes("s3://bucket/examples/_SUCCESS", b"")

    files = list_parquet_files("s3a://bucket/examples/")
    assert files == [("s3a://bucket/examples/part-00000.parquet", 5), ("s3a://bucket/examples/part-00001.parquet", 3)]
    fs, _ = open_filesystem(files[1][0])
    rows = [r for batch in read_slice(fs, FileSlice(files[1][0], 1, 3), ["row"], 2) for r in batch.column("row").to_pylist()]
    assert rows == [11, 12]
