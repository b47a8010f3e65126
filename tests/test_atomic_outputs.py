"""A job killed (SIGKILL) while it writes leaves the previous output intact and readable.

Each test puts a good output in place, starts the real job in its own process group, waits until the job's
hidden staging folder (``.<name>.tmp-*``) appears beside the output — the job is writing — and kills the
whole group. The previous output must then be byte for byte what it was and load as before, nothing new may
be visible at the final path, and a clean rerun must publish (and clear what the killed run left).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spark_retrieval.cli import main as cli_main
from spark_retrieval.jobs import main as job_main
from spark_retrieval.models.base import RetrievalModel
from spark_retrieval.storage import atomic_directory, write_local_atomically
from test_cli import write_ml1m

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 900  # a loaded 2-core machine can take minutes to start a JVM and fit


def environment(**extra):
    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1", **extra}


def snapshot(path: Path) -> dict:
    """Every file under ``path`` (hidden checksum files included) with its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def staging_of(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.tmp-*"))


def kill_while_writing(command: list[str], target: Path, env: dict, cwd: Path) -> Path:
    """Run ``command``; once a staging folder of ``target`` holds a file, SIGKILL its process group.

    Returns the staging folder the killed job left. Fails if the job ends before it starts writing.
    """
    log = cwd / f"{target.name}-killed.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, env=env, cwd=cwd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            staging = [folder for folder in staging_of(target) if any(p.is_file() for p in folder.rglob("*"))]
            if staging:
                os.killpg(process.pid, signal.SIGKILL)
                break
            if process.poll() is not None:
                pytest.fail(f"the job ended (exit {process.returncode}) before it wrote: {log.read_text()[-2000:]}")
            time.sleep(0.005)
        else:
            pytest.fail("the job did not start writing in time")
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL
    return staging[0]


@pytest.fixture(scope="module")
def prepared(spark, tmp_path_factory):
    """The bundled ml-latest-small split under ``out/split`` and a config for local[2] jobs."""
    root = tmp_path_factory.mktemp("atomic")
    config = root / "conf.yaml"
    config.write_text(
        "data: {dataset: ml-latest-small}\n"
        "model: {name: item_cf, params: {k_neighbours: 100}}\n"
        f"k: 20\noutput: '{root / 'out'}'\nmaster: 'local[2]'\n"
    )
    assert job_main("prepare", ["--config", str(config), "--quiet"]) == 0
    return root, str(config)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, params, new_params, published",
    [("item_cf", "{k_neighbours: 20}", "{k_neighbours: 100}", {"k_neighbours": 100}),
     ("als", "{rank: 4, max_iter: 2}", "{rank: 8, max_iter: 3}", {"rank": 8})],
    ids=["item_cf neighbour table", "als embeddings"],
)
def test_killed_train_keeps_the_previous_model(spark, prepared, model, params, new_params, published):
    root, config = prepared
    target = root / "out" / "models" / model
    base = ["--config", config, "--set", f"model.name={model}", "--quiet"]
    assert job_main("train", [*base, "--set", f"model.params={params}"]) == 0
    before = snapshot(target)
    tables_before = {name: sorted(repr(r) for r in table.collect()) for name, table in RetrievalModel.load(str(target)).tables.items()}
    visible_before = visible(target.parent)

    command = [sys.executable, str(REPO / "jobs" / "train.py"), *base, "--set", f"model.params={new_params}"]
    left = kill_while_writing(command, target, environment(), root)

    assert snapshot(target) == before, "the killed job changed the published model"
    loaded = RetrievalModel.load(str(target))
    assert {name: sorted(repr(r) for r in table.collect()) for name, table in loaded.tables.items()} == tables_before
    assert left.name.startswith(f".{model}.tmp-") and visible(target.parent) == visible_before

    # A clean rerun publishes the new model and removes what the killed run left beside it.
    assert job_main("train", [*base, "--set", f"model.params={new_params}"]) == 0
    saved = json.loads((target / "metadata.json").read_text())["params"]
    assert {key: saved[key] for key in published} == published
    assert staging_of(target) == [] and not list(target.parent.glob(f".{model}.old-*"))


@pytest.mark.slow
def test_killed_prepare_keeps_the_previous_split(spark, prepared):
    root, config = prepared
    target = root / "out" / "split"
    before = snapshot(target)
    counts = {part: spark.read.parquet(str(target / part)).count() for part in ("train", "test")}

    command = [sys.executable, str(REPO / "jobs" / "prepare.py"), "--config", config, "--set", "data.holdout=2", "--quiet"]
    kill_while_writing(command, target, environment(), root)

    assert snapshot(target) == before
    assert {part: spark.read.parquet(str(target / part)).count() for part in ("train", "test")} == counts
    assert job_main("prepare", ["--config", config, "--set", "data.holdout=2", "--quiet"]) == 0  # a clean rerun publishes
    assert staging_of(target) == []
    assert spark.read.parquet(str(target / "test")).count() < counts["test"]


@pytest.mark.slow
def test_killed_benchmark_leaves_the_previous_report(tmp_path):
    """The CLI writes its report only at the very end: killed while it computes, the old report stays."""
    data = write_ml1m(tmp_path / "ml-1m")
    out = tmp_path / "out"
    argv = ["benchmark", "--dataset", "ml-1m", "--data-dir", str(data), "--k", "5", "--models", "global_hot,item_cf",
            "--bootstrap", "0", "--master", "local[2]", "--output", str(out)]
    assert cli_main([*argv, "--quiet"]) == 0
    before = snapshot(out)
    executable = os.path.join(os.path.dirname(sys.executable), "spark-retrieval")
    process = subprocess.Popen([executable, *argv], env=environment(), cwd=tmp_path, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:  # stage lines: kill once the second model is being fitted
            if "fitting item_cf" in line:
                os.killpg(process.pid, signal.SIGKILL)
                break
        process.wait(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert snapshot(out) == before


KILLED_WRITER = """
import sys
from spark_retrieval.storage import write_local_atomically
write_local_atomically(sys.argv[1], b"n" * 400_000_000)
"""


def test_killed_small_file_write_keeps_the_previous_file(tmp_path):
    """Reports and metrics files: a writer killed mid-write leaves the old file whole (and only a hidden
    temporary beside it)."""
    target = tmp_path / "results.json"
    write_local_atomically(str(target), b'{"old": true}\n')
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size > 0 for p in tmp_path.glob(".results.json.*")) and time.monotonic() < deadline:
            assert process.poll() is None, "the writer finished before it could be killed"
            time.sleep(0.002)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert target.read_bytes() == b'{"old": true}\n'
    assert visible(tmp_path) == ["results.json"]


def test_publish_killed_between_its_renames_is_undone(spark, tmp_path):
    """Publishing renames the old copy aside, then the new one in; a kill between the two leaves the old copy
    as ``.<name>.old-*``. The next writer puts it back before doing anything, and clears it once it publishes."""
    target = tmp_path / "model"
    with atomic_directory(spark, str(target)) as staging:
        Path(staging.removeprefix("file:")).mkdir()
        Path(staging.removeprefix("file:"), "data").write_text("old")
    (target).rename(tmp_path / ".model.old-0123456789ab")  # the state a kill between the renames leaves
    (tmp_path / ".model.tmp-ba9876543210").mkdir()          # and the killed writer's complete staging copy

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic_directory(spark, str(target)):
            assert (target / "data").read_text() == "old"  # restored before the new write starts
            raise Boom
    assert (target / "data").read_text() == "old"
    with atomic_directory(spark, str(target)) as staging:
        Path(staging.removeprefix("file:")).mkdir()
        Path(staging.removeprefix("file:"), "data").write_text("new")
    assert (target / "data").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_small_files_on_hadoop_filesystems_are_replaced_by_a_rename(spark, tmp_path):
    """``write_small_text`` to an ``hdfs://``-style URI goes through a hidden sibling renamed over the file
    (checked here on ``file://`` through the same Hadoop code path)."""
    from spark_retrieval.storage import read_text, replace_text

    uri = f"file://{tmp_path}/metrics.json"
    replace_text(spark, uri, "old\n")
    replace_text(spark, uri, "new\n")
    assert read_text(spark, uri) == "new\n"
    assert visible(tmp_path) == ["metrics.json"] and not list(tmp_path.glob(".metrics.json.tmp-*"))
