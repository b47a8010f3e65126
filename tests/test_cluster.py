"""The jobs under spark-submit: --master local[2], and a standalone cluster (master + two workers on 127.0.0.1)
with the library shipped as dist/spark_retrieval.zip through --py-files. Both runs must give the same results.

The commands are not written here: they are read from the code blocks of docs/cluster.md that follow a
``<!-- test_cluster.py: NAME -->`` marker and run line by line with bash, so the documentation shows exactly
what is tested. ``NAME=value`` lines of a block are assignments kept for the block's later lines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from standalone_cluster import SPARK_HOME, StandaloneCluster

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "cluster.md"
ZIP = REPO / "dist" / "spark_retrieval.zip"
BUNDLED = REPO / "spark_retrieval" / "data" / "bundled" / "ml-latest-small"
METRICS = ("precision", "recall", "map", "ndcg", "hit_rate", "coverage", "queries")
JOB_TIMEOUT_S = 900

# The job lines both runs must have, in this order (after `$SUBMIT `): the test fails if the docs drop one.
EXPECTED_JOBS = [
    "jobs/prepare.py --config jobs/conf/ml-latest-small_item_cf.yaml --set data.path=$DATA_DIR",
    "jobs/train.py --config jobs/conf/ml-latest-small_item_cf.yaml",
    "jobs/evaluate.py --config jobs/conf/ml-latest-small_item_cf.yaml",
]


# -- docs/cluster.md -------------------------------------------------------------------------------


def doc_blocks(text: str | None = None) -> dict[str, list[str]]:
    """``{marker name: non-empty, non-comment lines of the bash block after it}``."""
    text = DOC.read_text() if text is None else text
    pattern = re.compile(r"<!-- test_cluster\.py: (\w+) -->\s*\n```bash\n(.*?)\n```", re.S)
    blocks = {}
    for name, body in pattern.findall(text):
        lines = [line.strip() for line in body.splitlines()]
        blocks[name] = [line for line in lines if line and not line.startswith("#")]
    return blocks


def is_assignment(line: str) -> bool:
    return re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line) is not None


def job_lines(block: list[str]) -> list[str]:
    return [line.removeprefix("$SUBMIT ") for line in block if not is_assignment(line)]


def run_block(name: str, env: dict[str, str], log: Path) -> list[tuple[str, subprocess.CompletedProcess, float]]:
    """Each command line of block ``name`` in its own bash, after the block's assignments; all must succeed."""
    block = doc_blocks()[name]
    assignments = [line for line in block if is_assignment(line)]
    results = []
    for line in block:
        if is_assignment(line):
            continue
        started = time.monotonic()
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "\n".join([*assignments, line])],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
        )
        seconds = time.monotonic() - started
        with open(log, "a") as out:
            out.write(f"### [{name}] {line}\n### exit {result.returncode} in {seconds:.1f} s\n")
            out.write(result.stdout + result.stderr + "\n")
        assert result.returncode == 0, f"[{name}] {line}\nexit {result.returncode}\n{output_tail(result)}"
        results.append((line, result, seconds))
    return results


def output_tail(result: subprocess.CompletedProcess) -> str:
    """The end of a failed spark-submit's output: the Python driver's (its stderr arrives on stdout) and the
    JVM's warnings and errors."""
    jvm = [line for line in result.stderr.splitlines() if " INFO " not in line]
    return f"stdout tail:\n{result.stdout[-3000:]}\nstderr (no INFO) tail:\n" + "\n".join(jvm[-40:])


def last_json_line(text: str) -> dict:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line in:\n{text[-2000:]}"
    return json.loads(lines[-1])


def submit_env(**values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(
        PATH=f"{SPARK_HOME / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        SPARK_LOCAL_IP="127.0.0.1",
        **values,
    )
    return env


# -- fixtures --------------------------------------------------------------------------------------


def write_bundled_as_csv(folder: Path) -> Path:
    """ml-latest-small's ratings.csv and movies.csv (the release's own format), from the copy bundled in the
    package: a ``data.path`` for the jobs that works wherever the library is imported from."""
    folder.mkdir(parents=True)
    pq.read_table(BUNDLED / "ratings.parquet").to_pandas().to_csv(folder / "ratings.csv", index=False)
    pq.read_table(BUNDLED / "movies.parquet").to_pandas().to_csv(folder / "movies.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_bundled_as_csv(tmp_path_factory.mktemp("data") / "ml-latest-small")


@pytest.fixture(scope="module")
def shipped_zip(tmp_path_factory) -> Path:
    log = tmp_path_factory.mktemp("build") / "build.log"
    run_block("build", submit_env(), log)
    assert zipfile.is_zipfile(ZIP), f"{ZIP} was not built"
    return ZIP


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with StandaloneCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def run_jobs(name: str, root: Path, data_dir: Path, **extra: str) -> dict:
    output = root / "output"
    env = submit_env(DATA_DIR=str(data_dir), OUTPUT=str(output), **extra)
    started = time.monotonic()
    results = run_block(name, env, root / "jobs.log")
    # evaluate.py prints its metrics as one JSON line. (spark-submit merges the Python driver's stderr, where the
    # stage lines go, into stdout, so it is not the only line there.)
    printed = [last_json_line(r.stdout) for line, r, _ in results if "jobs/evaluate.py" in line]
    timings = [(line, round(seconds, 1)) for line, _, seconds in results]
    print(f"[{name}] {time.monotonic() - started:.0f} s: {timings}")
    return {"output": output, "printed": printed, "log": root / "jobs.log"}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, data_dir):
    return run_jobs("local", tmp_path_factory.mktemp("local"), data_dir)


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, data_dir, cluster, shipped_zip):
    return run_jobs("cluster", tmp_path_factory.mktemp("on-cluster"), data_dir, MASTER=cluster.master_url)


# -- helpers to compare outputs --------------------------------------------------------------------


def rows(path: Path, keys: list[str]) -> list[tuple]:
    """A parquet folder's rows sorted by ``keys``, as plain tuples (arrays and structs too) comparable with ==."""
    frame = pq.read_table(path).to_pandas().sort_values(keys).reset_index(drop=True)
    return [tuple(plain(value) for value in row) for row in frame.itertuples(index=False)]


def plain(value):
    if isinstance(value, dict):
        return tuple((key, plain(item)) for key, item in value.items())
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(plain(item) for item in value)
    return value


def assert_same_table(expected_path: Path, got_path: Path, keys: list[str], min_rows: int = 500) -> None:
    """Two parquet folders hold the same rows, bit for bit (compared sorted by ``keys``)."""
    order = [(key, "ascending") for key in keys]
    expected = pq.read_table(expected_path).sort_by(order).combine_chunks()
    got = pq.read_table(got_path).sort_by(order).combine_chunks()
    assert expected.num_rows == got.num_rows > min_rows, (expected_path, expected.num_rows, got.num_rows)
    if not got.equals(expected):
        a, b = rows(expected_path, keys), rows(got_path, keys)
        differ = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        raise AssertionError(f"{got_path}: {len(differ)} of {len(a)} rows differ from {expected_path}, "
                             f"e.g. {str(a[differ[0]])[:300]} vs {str(b[differ[0]])[:300]}" if differ else "schemas differ")


def same_ranking(left, right, tol: float = 1e-5) -> bool:
    """Two top-K lists of ``(item_id, score)`` rank the same, allowing for rounding: scores equal within ``tol``
    position by position, and item ids equal except inside runs of near-equal scores (a near-tie may come out in
    either order, and at the cut-off either item of the tie may make the list)."""
    if len(left) != len(right):
        return False
    close = lambda a, b: abs(a - b) <= tol * max(1.0, abs(a), abs(b))  # noqa: E731
    if not all(close(a[1], b[1]) for a, b in zip(left, right)):
        return False
    start = 0
    while start < len(left):
        end = start
        while end + 1 < len(left) and close(left[end + 1][1], left[end][1]):
            end += 1
        run_left = {item for item, _ in left[start:end + 1]}
        run_right = {item for item, _ in right[start:end + 1]}
        if run_left != run_right and end + 1 < len(left):
            return False
        start = end + 1
    return True


def assert_close_vectors(expected: list[tuple], got: list[tuple], what: str, rtol: float = 1e-5) -> None:
    """``(key, vector)`` rows: the same keys, the vectors equal up to float rounding (ALS: Spark sums each
    normal equation in the order the shuffle delivers the ratings, which can move the last bit of a factor)."""
    assert [row[0] for row in got] == [row[0] for row in expected], what
    a, b = np.array([row[1] for row in expected]), np.array([row[1] for row in got])
    np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * np.abs(a).max(), err_msg=what)


def metrics(output: Path, model: str) -> dict:
    return json.loads((output / "metrics" / f"{model}.json").read_text())


# -- tests -----------------------------------------------------------------------------------------


def test_docs_blocks_run_the_same_jobs_locally_and_on_the_cluster():
    blocks = doc_blocks()
    assert set(blocks) >= {"local", "build", "cluster"}, f"markers missing in {DOC}"
    assert blocks["build"] == ["scripts/build_pyfiles.sh"]
    assert job_lines(blocks["local"]) == EXPECTED_JOBS
    # "Unchanged": the cluster runs the very same job lines; only the submit options differ.
    assert job_lines(blocks["cluster"]) == EXPECTED_JOBS
    local_submit = [line for line in blocks["local"] if is_assignment(line)]
    cluster_submit = [line for line in blocks["cluster"] if is_assignment(line)]
    assert local_submit == ['SUBMIT="spark-submit --master local[2] --driver-memory 1g"']
    assert len(cluster_submit) == 1 and "--master $MASTER --py-files dist/spark_retrieval.zip" in cluster_submit[0]
    # Every variable the tested lines use is set by the page's other blocks (the set-up, starting the cluster),
    # and the test sets the same ones (run_jobs; OUTPUT reaches the jobs through the configs' ${OUTPUT}).
    used = set(re.findall(r"\$([A-Z_][A-Z0-9_]*)", "\n".join(blocks["local"] + blocks["cluster"]))) - {"SUBMIT"}
    assert used == {"DATA_DIR", "MASTER"}
    all_bash = "\n".join(re.findall(r"```bash\n(.*?)\n```", DOC.read_text(), re.S))
    defined = set(re.findall(r"(?:^|\s)([A-Z_][A-Z0-9_]*)=", all_bash, re.M))
    assert used | {"OUTPUT", "PYSPARK_PYTHON", "SPARK_LOCAL_IP"} <= defined


def test_marked_blocks_elsewhere_are_copies_of_the_tested_ones():
    """A README (or any doc) may repeat a marked block; it must then be the very block this test runs."""
    blocks = doc_blocks()
    for path in [REPO / "README.md", REPO / "jobs" / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        if path == DOC or not path.is_file():
            continue
        for name, lines in doc_blocks(path.read_text()).items():
            assert lines == blocks.get(name), f"{path.relative_to(REPO)}: block '{name}' differs from {DOC.name}'s"


def test_build_script_makes_a_reproducible_zip_of_the_package(shipped_zip, tmp_path):
    with zipfile.ZipFile(shipped_zip) as archive:
        names = archive.namelist()
    assert "spark_retrieval/__init__.py" in names and "spark_retrieval/jobs.py" in names
    assert "spark_retrieval/data/bundled/ml-latest-small/ratings.parquet" in names  # package data too
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert names == sorted(names)
    again = tmp_path / "again.zip"
    subprocess.run(["scripts/build_pyfiles.sh", str(again)], cwd=REPO, check=True, capture_output=True)
    assert again.read_bytes() == shipped_zip.read_bytes()


PROBE = """
import json, os, sys
from pyspark.sql import SparkSession

def where(_):
    import spark_retrieval, spark_retrieval.models.cooccurrence as engine
    yield {"file": spark_retrieval.__file__, "engine": engine.__file__, "pid": os.getpid(),
           "cwd": os.getcwd(), "sys_path": sys.path[:6]}

spark = SparkSession.builder.getOrCreate()
import spark_retrieval
rows = spark.sparkContext.parallelize(range(8), 8).mapPartitions(where).collect()
print(json.dumps({"driver": spark_retrieval.__file__, "executors": rows, "app": spark.sparkContext.applicationId}))
spark.stop()
"""


def test_executors_import_the_library_from_the_shipped_zip(cluster, shipped_zip, tmp_path):
    """--py-files puts the zip ahead of site-packages (where .venv has an editable install of the library)."""
    import spark_retrieval

    assert not spark_retrieval.__file__.startswith(str(shipped_zip))  # this process has the installed copy
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    block = doc_blocks()["cluster"]
    [submit] = [line for line in block if line.startswith("SUBMIT=")]
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f"{submit}\n$SUBMIT {probe}"],
        cwd=REPO, env=submit_env(MASTER=cluster.master_url), capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
    )
    assert result.returncode == 0, output_tail(result)
    report = last_json_line(result.stdout)
    # The driver: the zip itself, or the copy SparkContext makes of it.
    assert re.search(r"/spark_retrieval\.zip/spark_retrieval/__init__\.py$", report["driver"]), report["driver"]
    executors = report["executors"]
    assert len(executors) == 8
    for row in executors:
        # Each executor fetched its own copy of the zip into its work dir and imports from it.
        file = os.path.normpath(os.path.join(row["cwd"], row["file"]))
        engine = os.path.normpath(os.path.join(row["cwd"], row["engine"]))
        assert re.search(r"/spark_retrieval\.zip/spark_retrieval/__init__\.py$", file), row
        assert re.search(r"/spark_retrieval\.zip/spark_retrieval/models/cooccurrence\.py$", engine), row
        assert file.startswith(str(cluster.root / "worker-")), row  # a worker's work dir, not the repo or dist/
    python_workers = {row["pid"] for row in executors}
    assert python_workers and all(pid != os.getpid() for pid in python_workers)


def test_cluster_results_equal_the_local_run(local_run, cluster_run):
    local, remote = local_run["output"], cluster_run["output"]
    expected, got = metrics(local, "item_cf"), metrics(remote, "item_cf")
    assert got["model"] == "item_cf" and got["dataset"] == "ml-latest-small" and got["k"] == 20
    # Means over queries: equal up to the order of floating-point additions.
    assert {m: got[m] for m in METRICS} == pytest.approx({m: expected[m] for m in METRICS}, rel=1e-9, abs=1e-12)
    assert got["queries"] == expected["queries"] > 1000
    assert cluster_run["printed"] == [metrics(remote, "item_cf")]

    # The split and Item CF's neighbour lists: the same rows, bit for bit, whatever the partitioning (Item CF's
    # engine sums in a fixed order).
    tables = [
        ("split/train", ["user_id", "item_id", "timestamp", "rating"]),
        ("split/test", ["query_id"]),
        ("models/item_cf/neighbours", ["item_id"]),
    ]
    for table, keys in tables:
        assert_same_table(local / table, remote / table, keys)


def test_the_untested_als_lines_are_the_tested_jobs_with_the_als_config():
    """The page shows ALS's two lines outside the marked blocks (test_executor_failure.py runs ALS on this
    cluster); they must be the tested item_cf lines with ALS's config and its checkpoint folder."""
    text = DOC.read_text()
    als = [line.removeprefix("$SUBMIT ") for line in re.findall(r"^\$SUBMIT .*ml-latest-small_als\.yaml.*$", text, re.M)]
    assert als == [
        EXPECTED_JOBS[1].replace("item_cf", "als") + " --set model.params.checkpoint_dir=$CHECKPOINT_DIR",
        EXPECTED_JOBS[2].replace("item_cf", "als"),
    ]


def test_bundled_dataset_from_the_shipped_zip(shipped_zip, tmp_path):
    """The ml-latest-small configs read the bundled copy when data.path is null; that must work with the library
    imported from the zip too, where the bundled parquet files have no filesystem path (read as package
    resources; under local[2] the driver takes the same route as on a cluster)."""
    env = submit_env(OUTPUT=str(tmp_path / "output"))
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c",
         "spark-submit --master local[2] --py-files dist/spark_retrieval.zip --driver-memory 1g "
         "jobs/prepare.py --config jobs/conf/ml-latest-small_item_cf.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
    )
    assert result.returncode == 0, output_tail(result)
    assert (tmp_path / "output" / "split" / "train").is_dir() and (tmp_path / "output" / "split" / "test").is_dir()
