"""Bad input, one table of cases: the CLI, the jobs and the library entry points.

Every case gets one clear message and a documented exit code (docs/reliability.md keeps the same table,
with the cases already covered elsewhere): CLI and job cases exit 2 with exactly one ``error: …`` line on
stderr naming the file, line, column or key where known, no traceback, and nothing left at the output.
"""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from spark_retrieval.benchmark import run_benchmark
from spark_retrieval.cli import main as cli_main
from spark_retrieval.data import load_interactions, load_movielens, temporal_split
from spark_retrieval.errors import DataNotFoundError, EmptyDataError, InvalidParameterError, MalformedDataError
from spark_retrieval.jobs import main as job_main
from spark_retrieval.models import ALS, GlobalHot, ItemCF, Swing
from test_cli import ML1M_RATINGS, write_ml1m
from test_movielens import csv_release, ml_1m, ml_100k

SCHEMA = "user_id long, item_id long, rating double, timestamp long"
JVM_NOTICE = "WARNING: Using incubator modules"  # printed by every Spark 4 JVM on start; not ours


def error_line(err: str) -> str:
    """The stderr of a failed command must be exactly one ``error: …`` line without a traceback."""
    lines = [line for line in err.strip().splitlines() if not line.startswith(JVM_NOTICE)]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def append_line(folder: Path, name: str, line: str, encoding: str = "utf-8") -> int:
    """Append ``line`` to ``folder/name``; return its 1-based line number."""
    path = folder / name
    text = path.read_bytes().decode(encoding)
    path.write_bytes((text + line + "\n").encode(encoding))
    return len(text.splitlines()) + 1


# -- the table ---------------------------------------------------------------------------------------
@dataclass
class Case:
    """``kind``: ``cli`` (argv of ``spark-retrieval``), ``job`` (``(job, argv)`` of ``jobs/<job>.py``) or
    ``library`` (a callable). ``setup(tmp_path, spark)`` builds the input and returns what the kind needs;
    ``message`` is a regex the one error line (or the exception) must match; ``error`` the library class."""

    id: str
    kind: str
    setup: Callable
    message: str
    error: type = None
    exit_code: int = 2
    marks: list = field(default_factory=list)


def ml1m_args(tmp_path, ratings=ML1M_RATINGS, *extra):
    data = write_ml1m(tmp_path / "ml-1m", ratings=ratings)
    return ["--dataset", "ml-1m", "--data-dir", str(data), *extra]


def malformed(builder, dataset, file, line, encoding="utf-8"):
    """A CLI case: ``dataset``'s fixture folder with ``line`` appended to ``file``; the error names both."""

    def setup(tmp_path, spark):
        folder = builder(tmp_path / dataset)
        number = append_line(folder, file, line, encoding)
        setup.expected = number
        return ["--dataset", dataset, "--data-dir", str(folder)]

    return setup, rf"{re.escape(file)} line {{line}}: {re.escape(repr(line))}"


def no_queries_ratings():
    """Every user has exactly 3 events: with holdout 3 none is left for train, so nobody gives a query."""
    return "\n".join(f"{user}::{item}::4::{978300000 + item}" for user in range(1, 6) for item in range(1, 4))


def low_ratings():
    return "\n".join(line.rsplit("::", 2)[0] + "::1::" + line.rsplit("::", 1)[1] for line in ML1M_RATINGS.splitlines())


def config_file(tmp_path, **overrides):
    data = write_ml1m(tmp_path / "ml-1m")
    body = {
        "data": {"dataset": "ml-1m", "path": str(data)},
        "model": {"name": "global_hot", "params": {}},
        "k": 5,
        "output": str(tmp_path / "out"),
    }
    body.update(overrides)
    path = tmp_path / "conf.yaml"
    path.write_text(json.dumps(body))  # JSON is YAML
    return str(path)


def job(name, *extra, **config):
    def setup(tmp_path, spark):
        return name, ["--config", config_file(tmp_path, **config), "--quiet", *extra]

    return setup


def config_is_a_folder(tmp_path, spark):
    (tmp_path / "conf.yaml").mkdir()
    return "train", ["--config", str(tmp_path / "conf.yaml")]


def config_not_utf8(tmp_path, spark):
    (tmp_path / "conf.yaml").write_bytes(b"data: {dataset: ml-1m}\nk: \xff\xfe\n")
    return "train", ["--config", str(tmp_path / "conf.yaml")]


# A saved Global Hot model at out/models/global_hot, damaged in each way a copy or a disk can damage it.
def saved_model(tmp_path, spark):
    train = spark.createDataFrame([(u, i, 4.0, u * 10 + i) for u in range(1, 6) for i in range(1, 5)], SCHEMA)
    path = tmp_path / "out" / "models" / "global_hot"
    GlobalHot().fit(train.repartition(2)).save(str(path))
    return path


def part_files(table: Path):
    return sorted(p for p in table.iterdir() if p.name.startswith("part-"))


def corrupt(damage):
    def setup(tmp_path, spark):
        damage(saved_model(tmp_path, spark))
        return "evaluate", ["--config", config_file(tmp_path), "--quiet"]

    return setup


def rewrite_metadata(change, keep_checksum=False):
    """Edit metadata.json by hand; unless ``keep_checksum``, also drop the ``.crc`` file Hadoop's local
    filesystem keeps beside it (as a copy that skips hidden files would)."""

    def damage(path):
        document = json.loads((path / "metadata.json").read_text())
        change(document)
        (path / "metadata.json").write_text(json.dumps(document))
        if not keep_checksum:
            (path / ".metadata.json.crc").unlink()

    return damage


def not_json(path):
    (path / "metadata.json").write_text("{not json")
    (path / ".metadata.json.crc").unlink()


def truncate_first_part(path):
    part = part_files(path / "item_counts")[0]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])


def copy_a_part(path):
    part = part_files(path / "item_counts")[0]
    shutil.copy(part, part.with_name("part-99999-copied.snappy.parquet"))


def data_dir_is_a_file(tmp_path, spark):
    (tmp_path / "ratings.dat").write_text("1::1::5::978300000\n")
    return ["--dataset", "ml-1m", "--data-dir", str(tmp_path / "ratings.dat")]


def dangling_ratings_link(tmp_path, spark):
    folder = ml_1m(tmp_path / "ml-1m")
    (folder / "ratings.dat").unlink()
    (folder / "ratings.dat").symlink_to(tmp_path / "gone.dat")
    return ["--dataset", "ml-1m", "--data-dir", str(folder)]


def csv_ratings_named_as_ml_1m(tmp_path, spark):
    folder = ml_1m(tmp_path / "ml-1m")
    shutil.copy(csv_release(tmp_path / "ml-latest") / "ratings.csv", folder / "ratings.dat")
    return ["--dataset", "ml-1m", "--data-dir", str(folder)]


def output_is_a_file(tmp_path, spark):
    (tmp_path / "out").write_text("keep me")
    return ["--output", str(tmp_path / "out")]


def output_under_a_file(tmp_path, spark):
    (tmp_path / "f").write_text("x")
    return ["--output", str(tmp_path / "f" / "out")]


def job_output_is_a_file(tmp_path, spark):
    (tmp_path / "taken").write_text("x")
    return job("prepare", output=str(tmp_path / "taken"))(tmp_path, spark)


def prepare_without_queries(tmp_path, spark):
    data = write_ml1m(tmp_path / "short", no_queries_ratings())
    return "prepare", ["--config", config_file(tmp_path, data={"dataset": "ml-1m", "path": str(data)}), "--quiet"]


def parquet_path_holding_csv(tmp_path, spark):
    (tmp_path / "events.parquet").write_text("user_id,item_id,rating,timestamp\n1,2,3.0,4\n")
    return lambda: load_interactions(spark, str(tmp_path / "events.parquet"))


def benchmark_without_queries(tmp_path, spark):
    ratings = spark.createDataFrame([(u, i, 4.0, i) for u in range(1, 4) for i in range(1, 4)], SCHEMA)

    def progress(message):
        assert not message.startswith("fitting"), "a model was fitted although no query can be evaluated"

    return lambda: run_benchmark(spark, ratings, "tiny", models=["global_hot"], progress=progress)


MALFORMED = [
    ("ratings.dat", malformed(ml_1m, "ml-1m", "ratings.dat", "3::1193::5", "latin-1")),
    ("users.dat", malformed(ml_1m, "ml-1m", "users.dat", "3::M::25", "latin-1")),
    ("movies.dat", malformed(ml_1m, "ml-1m", "movies.dat", "99::Toy Story (1995)", "latin-1")),
    ("u.data", malformed(ml_100k, "ml-100k", "u.data", "196\t242\t3")),
    ("u.user", malformed(ml_100k, "ml-100k", "u.user", "7|M|writer")),
    ("u.item", malformed(ml_100k, "ml-100k", "u.item", "999|Broken (1999)", "latin-1")),
    ("items.tsv", malformed(lambda folder: ml_100k(folder, items="items.tsv"), "ml-100k", "items.tsv", "999\tBroken")),
    ("ratings.csv", malformed(csv_release, "ml-latest-small", "ratings.csv", "1,1,4.0")),
    ("movies.csv", malformed(csv_release, "ml-latest-small", "movies.csv", "no commas here")),
]

CASES = [
    # -- paths --------------------------------------------------------------------------------------
    Case("cli: --data-dir is a file", "cli", data_dir_is_a_file, r"--data-dir .*/ratings\.dat is a file; pass the folder"),
    Case("cli: folder of another dataset", "cli", lambda t, s: ["--dataset", "ml-1m", "--data-dir", str(ml_100k(t / "ml-100k"))],
         r"ratings\.dat not found in .*ml-100k \(it holds u\.data, u\.item, u\.user; is it the right dataset\?\)"),
    Case("cli: ratings file is a dangling link", "cli", dangling_ratings_link, r"ratings\.dat (not found in|cannot be read)"),
    Case("cli: --output is a file", "cli", output_is_a_file, r"--output .*/out is a file, not a folder"),
    Case("cli: --output under a file", "cli", output_under_a_file, r"--output .*/f/out cannot be created: .*/f is a file"),
    Case("job: config is a folder", "job", config_is_a_folder, r"conf\.yaml is a folder, not a file"),
    Case("job: config is not UTF-8", "job", config_not_utf8, r"conf\.yaml: not UTF-8 text \(byte \d+\)"),
    Case("job: train before prepare", "job", job("train"), r"out/split/train not found: run jobs/prepare\.py"),
    Case("job: evaluate before train", "job", job("evaluate"), r"no saved model at .*out/models/global_hot \(metadata\.json not found\)"),
    Case("library: load_interactions on a missing path", "library",
         lambda t, s: lambda: load_interactions(s, str(t / "nowhere")), r"interactions not found: .*nowhere", DataNotFoundError),
    # -- wrong format -------------------------------------------------------------------------------
    Case("cli: CSV ratings in an ml-1m folder", "cli", csv_ratings_named_as_ml_1m,
         r"ratings\.dat: 4 row\(s\) with a missing or non-integer user_id; .*first bad record at .*ratings\.dat line 1: "
         r"'userId,movieId,rating,timestamp'"),
    Case("library: parquet path holding CSV", "library", parquet_path_holding_csv,
         r"events\.parquet \(read as parquet\) cannot be read: .*events\.parquet is not a Parquet file", MalformedDataError),
    # -- malformed lines, one per text format ---------------------------------------------------------
    *[Case(f"cli: malformed line in {name}", "cli", setup, pattern) for name, (setup, pattern) in MALFORMED],
    # -- values ---------------------------------------------------------------------------------------
    Case("cli: NaN rating", "cli", lambda t, s: ml1m_args(t, ML1M_RATINGS + "\n3::4::NaN::978300000"),
         r"ratings\.dat: 1 row\(s\) with a missing, non-numeric or NaN rating; first bad record at .*ratings\.dat line 65: '3::4::NaN::978300000'"),
    Case("cli: negative user id", "cli", lambda t, s: ml1m_args(t, "-3::4::5::978300000\n" + ML1M_RATINGS),
         r"ratings\.dat: 1 row\(s\) with a negative user_id; first bad record at .*ratings\.dat line 1: '-3::4::5::978300000'"),
    Case("cli: null item id", "cli", lambda t, s: ml1m_args(t, ML1M_RATINGS + "\n3::::5::978300000"),
         r"ratings\.dat: 1 row\(s\) with a missing or non-integer item_id; first bad record at .*line 65"),
    Case("cli: timestamps in milliseconds", "cli", lambda t, s: ml1m_args(t, ML1M_RATINGS.replace("::9783", "::9783000")),
         r"ratings\.dat: timestamps look like milliseconds \(largest is \d+\); expected seconds since 1970 — divide them by 1000"),
    # -- nothing to evaluate ------------------------------------------------------------------------------
    Case("cli: no user has enough events", "cli", lambda t, s: ml1m_args(t, no_queries_ratings()),
         r"ml-1m gives no test queries: none of its 5 user\(s\) has more than 3 events \(holdout=3 needs at least 4 per user\)"),
    Case("cli: no held-out event is positive", "cli", lambda t, s: ml1m_args(t, low_ratings()),
         r"ml-1m gives no test queries: none of the 24 held-out events is rated above positive_threshold=2"),
    Case("job: prepare with no queries", "job", prepare_without_queries, r"short gives no test queries: none of its 5 user\(s\)"),
    Case("library: run_benchmark with no queries fails before fitting", "library", benchmark_without_queries,
         r"tiny gives no test queries: none of its 3 user\(s\) has more than 3 events", EmptyDataError),
    # -- parameters ---------------------------------------------------------------------------------------
    Case("cli: --holdout 0", "cli", lambda t, s: ["--holdout", "0"], r"argument --holdout: expected a positive integer, got '0'"),
    Case("cli: --positive-threshold nan", "cli", lambda t, s: ["--positive-threshold", "nan"],
         r"argument --positive-threshold: expected a finite number, got 'nan'"),
    Case("cli: --seed not an integer", "cli", lambda t, s: ["--seed", "x"], r"argument --seed: invalid int value: 'x'"),
    Case("cli: --master not a master URL", "cli", lambda t, s: ["--master", "bogus://x"],
         r"--master 'bogus://x' is not a Spark master URL"),
    Case("job: master not a master URL", "job", job("train", master="locl[2]"), r"conf\.yaml: master: 'locl\[2\]' is not a Spark master URL"),
    Case("job: positive_threshold NaN", "job", job("prepare", "--set", "data.positive_threshold=.nan"),
         r"conf\.yaml: data\.positive_threshold: expected a finite number, got nan"),
    Case("job: ALS rank not a number", "job", job("train", "--set", "model={name: als, params: {rank: many}}"),
         r"conf\.yaml: model\.params\.rank: "),
    Case("job: output is a file", "job", job_output_is_a_file, r"conf\.yaml: output: .*/taken is a file, not a folder"),
    Case("library: temporal_split positive_threshold NaN", "library",
         lambda t, s: lambda: temporal_split(s.createDataFrame([(1, 1, 1.0, 1)], SCHEMA), positive_threshold=float("nan")),
         r"positive_threshold must be a finite number, got nan", InvalidParameterError),
    # -- a corrupt saved model (jobs/evaluate.py loads it) ---------------------------------------------------
    Case("job: model metadata.json not JSON", "job", corrupt(not_json),
         r"corrupt saved model at .*global_hot: metadata\.json: JSONDecodeError"),
    Case("job: model metadata.json edited (checksum)", "job", corrupt(rewrite_metadata(lambda d: d.update(k=1), keep_checksum=True)),
         r"corrupt saved model at .*global_hot: metadata\.json: Checksum error"),
    Case("job: model table folder deleted", "job", corrupt(lambda p: shutil.rmtree(p / "item_counts")),
         r"corrupt saved model at .*global_hot: table 'item_counts' is missing"),
    Case("job: model data file truncated", "job", corrupt(truncate_first_part),
         r"corrupt saved model at .*global_hot: table 'item_counts': data file part-\S+ has \d+ bytes, \d+ were saved"),
    Case("job: model data file deleted", "job", corrupt(lambda p: part_files(p / "item_counts")[0].unlink()),
         r"corrupt saved model at .*global_hot: table 'item_counts': data file part-\S+ is missing"),
    Case("job: model data file added", "job", corrupt(copy_a_part),
         r"table 'item_counts': unexpected data file part-99999-copied\.snappy\.parquet \(not written by save\)"),
    Case("job: model of a newer format", "job", corrupt(rewrite_metadata(lambda d: d.update(format_version=99))),
         r"global_hot was saved in format 99; this version of spark-retrieval reads up to 1"),
    Case("job: model class unknown", "job", corrupt(rewrite_metadata(lambda d: d.update({"class": "spark_retrieval.models.nope.Nope"}))),
         r"corrupt saved model at .*global_hot: metadata\.json: ModuleNotFoundError"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(spark, tmp_path, capsys, case):
    built = case.setup(tmp_path, spark)
    message = case.message.replace("{line}", str(getattr(case.setup, "expected", "")))
    if case.kind == "library":
        with pytest.raises(case.error) as error:
            built()
        assert re.search(message, str(error.value)), str(error.value)
        assert "\n" not in str(error.value)
        return
    before = snapshot(tmp_path)
    if case.kind == "cli":
        output = tmp_path / "out"
        argv = built if "--output" in built else [*built, "--output", str(output)]
        code = cli_main(["benchmark", *argv, "--quiet"])
    else:
        name, argv = built
        code = job_main(name, argv)
    assert code == case.exit_code
    line = error_line(capsys.readouterr().err)
    assert re.search(message, line), line
    assert snapshot(tmp_path) == before, "a failed command left output behind"


def snapshot(root: Path) -> dict:
    """Every path under ``root``: files with their bytes, folders and links as such (hidden ones included)."""
    def content(path):
        return "link" if path.is_symlink() else path.read_bytes() if path.is_file() else "folder"

    return {str(p.relative_to(root)): content(p) for p in sorted(root.rglob("*"))}


# -- a real process: its whole stderr, JVM included -------------------------------------------------------
def run_cli(*argv, cwd):
    executable = os.path.join(os.path.dirname(sys.executable), "spark-retrieval")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    return subprocess.run([executable, "benchmark", *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_process_stderr_is_one_line_before_and_after_spark_starts(tmp_path):
    """In a real process the JVM writes to the same stderr: a bad master (once a JVM stack trace and a Python
    traceback) and a malformed line found by a Spark job both leave exactly one line of ours."""
    result = run_cli("--master", "bogus://x", "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert "is not a Spark master URL" in error_line(result.stderr)
    data = write_ml1m(tmp_path / "ml-1m", ratings=ML1M_RATINGS + "\n3::1193")
    result = run_cli("--dataset", "ml-1m", "--data-dir", str(data), "--models", "global_hot", "--quiet",
                     "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert re.search(r"ratings\.dat line 65: '3::1193'$", error_line(result.stderr))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-1m"]


# -- policies: duplicates are resolved, unseen items are misses ------------------------------------------
def test_duplicate_events_keep_the_latest_and_are_counted(spark, caplog):
    """A repeated (user, item) pair keeps only its latest event (then its highest rating); the split counts
    and logs what it dropped, so a replayed log neither double counts a query nor leaks a held-out item."""
    events = [(1, 10, 4.0, 1), (1, 11, 4.0, 2), (1, 12, 4.0, 3), (1, 13, 4.0, 4), (1, 14, 5.0, 5),
              (1, 11, 2.0, 6),    # re-rated later: the latest event of (1, 11) moves to the end, rated 2.0
              (1, 14, 5.0, 5),    # the same event twice (a replayed log)
              (2, 10, 3.0, 1), (2, 10, 5.0, 1), (2, 11, 4.0, 2), (2, 12, 4.0, 3), (2, 13, 4.0, 4)]
    with caplog.at_level(logging.WARNING, logger="spark_retrieval"):
        split = temporal_split(spark.createDataFrame(events, SCHEMA), holdout=2)
        counts = split.counts()
    assert counts["duplicate_events"] == 3 and counts["train_events"] + counts["held_out_events"] == 9
    assert "3 duplicate event(s) dropped" in caplog.text
    train = sorted(tuple(r) for r in split.train.collect())
    assert train == [(1, 10, 4.0, 1), (1, 12, 4.0, 3), (1, 13, 4.0, 4), (2, 10, 5.0, 1), (2, 11, 4.0, 2)]
    test = sorted((r["user_id"], r["item_id"], r["last_item"]) for r in split.test.collect())
    assert test == [(1, 14, 13), (2, 12, 11), (2, 13, 12)]  # (1, 11) is held out but rated 2.0: not a query


def test_duplicated_lines_change_no_metric(spark, tmp_path):
    """Every line of a MovieLens file written twice: the same split, the same metrics as the clean file."""
    reports = []
    for name, ratings in (("clean", ML1M_RATINGS), ("doubled", ML1M_RATINGS + "\n" + ML1M_RATINGS)):
        data = load_movielens(spark, "ml-1m", write_ml1m(tmp_path / name, ratings=ratings)).ratings
        result = run_benchmark(spark, data, "ml-1m", models=["global_hot", "item_cf"], k=5, bootstrap=20)  # rows' intervals compared too
        reports.append((result.split, [{key: row[key] for key in row if not key.endswith("_seconds")} for row in result.results]))
    (clean_split, clean_rows), (doubled_split, doubled_rows) = reports
    assert doubled_split == {**clean_split, "duplicate_events": 64} and clean_split["duplicate_events"] == 0
    assert doubled_rows == clean_rows


@pytest.mark.parametrize(
    "estimator",
    [GlobalHot, ItemCF, Swing, lambda: ALS(rank=4, max_iter=2, num_blocks=2)],
    ids=["global_hot", "item_cf", "swing", "als"],
)
def test_test_items_unseen_in_training_are_misses(spark, estimator):
    """Queries whose label, last item or user the model never saw stay in the denominator and score 0."""
    from spark_retrieval.evaluation import evaluate, per_query_metrics

    train = spark.createDataFrame([(u, i, 4.0, u + i) for u in range(1, 7) for i in range(1, 6) if (u + i) % 4], SCHEMA)
    test = spark.createDataFrame(
        [(1, 1, 999, 2, [2], 100),     # label never seen
         (2, 99, 3, 998, [998], 100),  # user and last item never seen, label seen
         (3, 2, 1, 1, [1], 100)],      # an ordinary query
        "query_id long, user_id long, item_id long, last_item long, recent_items array<long>, timestamp long",
    )
    model = estimator().fit(train)
    recommendations = model.recommend(test, 3)
    assert sorted(r["query_id"] for r in recommendations.collect()) == [1, 2, 3]
    per_query = {r["query_id"]: r["hit_rate"] for r in per_query_metrics(recommendations, test, 3).collect()}
    assert per_query[1] == 0.0
    metrics = evaluate(recommendations, test, k=3, catalog=train)
    assert metrics["queries"] == 3 and 0.0 <= metrics["hit_rate"] <= 2 / 3
