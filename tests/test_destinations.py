"""Every destination is checked before the work, the way it will be written (exit 2 in seconds, no Spark job),
and results that still cannot be written after the work are kept in a local fallback folder (exit 4).

See docs/reliability.md, "Destinations"."""

import json
import os
import subprocess
import sys
import time

import pytest

from spark_retrieval import s3
from spark_retrieval.cli import main as cli_main
from spark_retrieval.errors import OutputWriteError
from spark_retrieval.jobs import main as job_main
from test_bad_input import config_file, error_line
from test_cli import write_ml1m
from test_report import PNG_SIGNATURE, sample_result
from test_s3 import endpoint  # noqa: F401 - the moto server fixture

READ_ONLY = "/sys"  # sysfs: creating a file there is refused, even for root (/proc says "no such file")


def spark_jobs(spark) -> set:
    return set(spark.sparkContext.statusTracker().getJobIdsForGroup(None))


def cli(tmp_path, *extra):
    data = write_ml1m(tmp_path / "ml-1m")
    return cli_main(["benchmark", "--dataset", "ml-1m", "--data-dir", str(data), "--k", "5", "--models", "global_hot",
                     "--bootstrap", "0", "--quiet", *extra])


def fails_early(spark, capsys, run, pattern):
    """``run()`` exits 2 with one ``error:`` line matching ``pattern``, in seconds, and starts no Spark job."""
    import re

    before = spark_jobs(spark)
    start = time.monotonic()
    code = run()
    elapsed = time.monotonic() - start
    line = error_line(capsys.readouterr().err)
    assert code == 2, line
    assert re.search(pattern, line), line
    assert elapsed < 20, f"took {elapsed:.1f}s"
    assert spark_jobs(spark) == before, "a Spark job started before the destination was checked"
    return line


# -- before the work: one line, exit 2, nothing computed ---------------------------------------------------


@pytest.mark.parametrize(
    "output, pattern",
    [
        ("{tmp}/f/out", r"--output .*/f/out cannot be created: .*/f is a file$"),
        (READ_ONLY + "/spark-retrieval/out", r"--output /sys/spark-retrieval/out is not writable: Permission denied \(/sys\)$"),
        ("nope://bucket/out", r'--output nope://bucket/out cannot be written: UnsupportedFileSystemException: No FileSystem for scheme "nope"$'),
        ("file://{tmp}/f/out", r"--output file://.*/f/out cannot be created: .*/f is a file$"),
    ],
    ids=["under a file", "read-only filesystem", "unknown URI scheme", "file:// URI under a file"],
)
def test_cli_destination_fails_before_any_work(spark, tmp_path, capsys, output, pattern):
    (tmp_path / "f").write_text("a file")
    output = output.format(tmp=tmp_path)
    fails_early(spark, capsys, lambda: cli(tmp_path, "--output", output), pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "ml-1m"]  # no folder, no probe left


def test_cli_process_fails_in_seconds_without_starting_spark(tmp_path):
    (tmp_path / "f").write_text("a file")
    executable = os.path.join(os.path.dirname(sys.executable), "spark-retrieval")
    start = time.monotonic()
    result = subprocess.run([executable, "benchmark", "--models", "global_hot", "--output", str(tmp_path / "f" / "out")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert error_line(result.stderr).endswith("/f is a file")
    assert "WARNING: Using incubator modules" not in result.stderr  # no JVM was started
    assert time.monotonic() - start < 30


@pytest.mark.parametrize(
    "job, overrides, pattern",
    [
        ("prepare", {"output": "{tmp}/f/out"}, r"conf\.yaml: output: .*/f/out cannot be created: .*/f is a file$"),
        ("evaluate", {"output": READ_ONLY + "/run"}, r"conf\.yaml: output: /sys/run is not writable: Permission denied"),
        ("benchmark", {"output": "nope://x/run"}, r'conf\.yaml: output: nope://x/run/benchmark cannot be written: .*No FileSystem for scheme "nope"'),
        ("train", {"output": "nope://x/run"}, r'conf\.yaml: output: nope://x/run/models/global_hot cannot be written: .*No FileSystem for scheme "nope"'),
        ("train", {"model": {"name": "dssm_softmax", "params": {"checkpoint_dir": "{tmp}/f/checkpoints"}}},
         r"conf\.yaml: model\.params\.checkpoint_dir: .*/f/checkpoints cannot be created: .*/f is a file$"),
        ("train", {"model": {"name": "dssm_softmax", "params": {"working_dir": READ_ONLY + "/work"}}},
         r"conf\.yaml: model\.params\.working_dir: /sys/work is not writable"),
    ],
    ids=["prepare: output under a file", "evaluate: read-only output", "benchmark: unknown scheme",
         "train: unknown scheme", "train: checkpoint_dir under a file", "train: read-only working_dir"],
)
def test_job_destination_fails_before_any_work(spark, tmp_path, capsys, job, overrides, pattern):
    (tmp_path / "f").write_text("a file")
    overrides = json.loads(json.dumps(overrides).replace("{tmp}", str(tmp_path)))
    config = config_file(tmp_path, **overrides)
    fails_early(spark, capsys, lambda: job_main(job, ["--config", config, "--quiet"]), pattern)


# -- S3 (moto server) ----------------------------------------------------------------------------------------


@pytest.fixture
def bucket(endpoint, monkeypatch):  # noqa: F811
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "FAKE-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    s3.client().create_bucket(Bucket="bucket")
    return "bucket"


def read_only_credentials(monkeypatch):
    """A moto IAM user that may list and read the bucket but not write it, with IAM enforced (a real denial)."""
    import boto3
    import moto.settings

    iam = boto3.session.Session().client("iam")
    user = f"reader-{time.monotonic_ns()}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        # s3:HeadBucket: moto's action for HEAD on a bucket (AWS asks for s3:ListBucket there)
        "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:HeadBucket", "s3:GetObject"], "Resource": "*"}],
    }))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)


def test_s3_bucket_missing_fails_before_any_work(spark, tmp_path, capsys, bucket):
    fails_early(spark, capsys, lambda: cli(tmp_path, "--output", "s3://nobucket/run"),
                r"^error: --output s3://nobucket/: bucket 'nobucket' does not exist$")


def test_s3_write_denied_fails_before_any_work(spark, tmp_path, capsys, bucket, monkeypatch):
    read_only_credentials(monkeypatch)
    fails_early(spark, capsys, lambda: cli(tmp_path, "--output", "s3://bucket/run"),
                r"^error: --output s3://bucket/run/: access denied \(AccessDenied\); check the credentials and the bucket policy$")
    monkeypatch.setattr("moto.settings.INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))
    assert "Contents" not in s3.client().list_objects_v2(Bucket="bucket")  # the probe left nothing


def test_s3_write_denied_after_the_work_keeps_the_report(tmp_path, bucket, monkeypatch):
    monkeypatch.chdir(tmp_path)
    read_only_credentials(monkeypatch)  # e.g. the role's policy changed during the run
    with pytest.raises(OutputWriteError) as error:
        sample_result().write("s3://bucket/run")
    fallback = error.value.fallback
    assert os.path.dirname(fallback) == str(tmp_path)
    assert "could not write s3://bucket/run: s3://bucket/run/results." in str(error.value)
    assert f"access denied (AccessDenied); the results are kept in {fallback}/" in str(error.value)
    assert sorted(os.listdir(fallback)) == ["results.json", "results.md", "results.png"]


# -- after the work: the results are kept, exit 4 -------------------------------------------------------------


def break_destination_after_rendering(monkeypatch, path):
    """The destination breaks once the work is done: a file appears where the output folder was to go."""
    from spark_retrieval import report

    render = report.report_files

    def render_then_break(document):
        files = render(document)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not a folder")
        return files

    monkeypatch.setattr(report, "report_files", render_then_break)


def check_fallback(err: str, destination: str, cwd) -> str:
    line = error_line(err)
    assert line.startswith(f"error: could not write {destination}: "), line
    folder = line.split("the results are kept in ", 1)[1].split("/ (copy them", 1)[0]
    assert os.path.dirname(folder) == str(cwd) and os.path.basename(folder).startswith("spark-retrieval-fallback-")
    assert sorted(os.listdir(folder)) == ["results.json", "results.md", "results.png"]
    with open(os.path.join(folder, "results.json")) as stream:
        report = json.load(stream)
    assert [row["model"] for row in report["results"]] == ["global_hot"] and report["results"][0]["queries"] > 0
    assert "| global_hot |" in open(os.path.join(folder, "results.md")).read()
    assert open(os.path.join(folder, "results.png"), "rb").read()[:8] == PNG_SIGNATURE
    return folder


def test_cli_output_broken_after_the_work_keeps_the_results_and_exits_4(spark, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    break_destination_after_rendering(monkeypatch, out)
    assert cli(tmp_path, "--output", str(out)) == 4
    captured = capsys.readouterr()
    assert "| global_hot |" in captured.out  # the table was printed too
    check_fallback(captured.err, str(out), tmp_path)


def test_job_output_broken_after_the_work_keeps_the_results_and_exits_4(spark, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_file(tmp_path, models="global_hot", bootstrap=0)
    break_destination_after_rendering(monkeypatch, tmp_path / "out" / "benchmark")
    assert job_main("benchmark", ["--config", config, "--quiet"]) == 4
    check_fallback(capsys.readouterr().err, str(tmp_path / "out" / "benchmark"), tmp_path)


# -- library calls that write: an error naming the path --------------------------------------------------------


def test_model_save_refused_names_the_path(spark, tmp_path):
    from spark_retrieval.models import GlobalHot

    train = spark.createDataFrame([(u, i, 4.0, u * 10 + i) for u in range(1, 4) for i in range(1, 4)],
                                  "user_id long, item_id long, rating double, timestamp long")
    (tmp_path / "f").write_text("a file")
    with pytest.raises(OutputWriteError) as error:
        GlobalHot().fit(train).save(str(tmp_path / "f" / "model"))
    message = str(error.value)
    assert message.startswith(f"could not save the model to {tmp_path}/f/model: ") and "\n" not in message


def test_checkpoint_write_refused_names_the_path(tmp_path):
    from spark_retrieval.models.two_tower.checkpoint import save_checkpoint

    (tmp_path / "f").write_text("a file")
    with pytest.raises(OutputWriteError) as error:
        save_checkpoint(str(tmp_path / "f" / "checkpoints"), {"epochs_done": 1})
    message = str(error.value)
    assert message.startswith(f"could not write the checkpoint {tmp_path}/f/checkpoints/checkpoint.pt: ")
    assert "\n" not in message
