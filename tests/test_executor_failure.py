"""Kill -9 one executor JVM of a standalone cluster (master + two workers on 127.0.0.1) while Item CF, Swing, ALS
and the evaluator run: every job must finish, with the output of a clean run.

The test submits this very file as the driver (``spark-submit … tests/test_executor_failure.py --driver``), with
the library shipped as a zip through ``--py-files``. In one application the driver runs four phases twice,
first clean, then with a kill in each phase:

* ``item_cf`` and ``swing``: fit, then save the model (its neighbour table is computed and written here);
* ``als``: fit with a checkpoint directory, save, and write the top-20 retrieval for the test queries;
* ``evaluate``: load the three saved models and evaluate their top-20 lists on the test split.

During a killed phase a thread of the driver polls ``sc.statusTracker()`` for the phase's job group; once a
running job of the group has a stage with tasks running and more waiting (and 40 % of the clean run's tasks
have completed, so the dying executor holds shuffle output) it sends SIGKILL to the
``CoarseGrainedExecutorBackend`` JVM of an executor that is running a task, and waits for it to die. Spark
reruns the lost tasks and recomputes lost shuffle output; the master starts a replacement executor, and the
next phase waits for two executors again. A kill that cost Spark no task (the victim's tasks had ended)
tests nothing, and the phase runs again, at most three times. The driver writes a JSON report; the test checks
every kill happened mid-phase and every output (saved tables, retrieval lists, metrics) equals the clean run's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from standalone_cluster import SPARK_SUBMIT, StandaloneCluster
from test_cluster import assert_close_vectors, assert_same_table, rows, same_ranking, write_bundled_as_csv

pytestmark = pytest.mark.slow

PHASES = ("item_cf", "swing", "als", "evaluate")
MODELS = ("item_cf", "swing", "als")
# The kill comes once this share of the clean run's tasks of the phase have completed in the killed run: late
# enough that the executor holds shuffle output (and ALS is iterating), early enough that the phase still runs.
KILL_AT_SHARE = 0.4
KILL_ATTEMPTS = 3
K = 20
EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"


# == driver side: runs under spark-submit =============================================================


def executor_processes(app_id: str) -> dict[str, psutil.Process]:
    """``{executor id: psutil.Process}`` for this application's executor JVMs on this machine."""
    found = {}
    for process in psutil.process_iter(["cmdline"]):
        command = process.info.get("cmdline") or []
        if EXECUTOR_CLASS in command and _flag(command, "--app-id") == app_id:
            found[_flag(command, "--executor-id")] = process
    return found


def _flag(command: list[str], name: str) -> str | None:
    return next((command[i + 1] for i in range(len(command) - 1) if command[i] == name), None)


def busy_executors(sc) -> list[str]:
    """Ids of the executors now running tasks, from the driver's status store (most active first)."""
    try:
        summaries = sc._jsc.sc().statusStore().executorList(True)
        rows = [summaries.apply(i) for i in range(summaries.size())]
        busy = [(row.activeTasks(), row.id()) for row in rows if row.id() != "driver" and row.activeTasks() > 0]
        return [executor for _, executor in sorted(busy, reverse=True)]
    except Exception:  # noqa: BLE001 - an internal API: without it any executor will do
        return []


def live_executor_ids(sc) -> list[str]:
    ids = sc._jsc.sc().getExecutorIds()
    return sorted(ids.apply(i) for i in range(ids.size()))


def group_stage_infos(sc, group: str) -> list:
    tracker = sc.statusTracker()
    infos = []
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        for stage_id in job.stageIds if job else ():
            info = tracker.getStageInfo(stage_id)
            if info is not None:
                infos.append(info)
    return infos


class ExecutorKiller(threading.Thread):
    """Kill one busy executor JVM of the application once the job group runs tasks; record what happened."""

    def __init__(self, sc, group: str, after_tasks: int):
        super().__init__(daemon=True)
        self.sc, self.group, self.after_tasks = sc, group, after_tasks
        self.done = threading.Event()
        self.record: dict | None = None
        self.error: str | None = None
        self.finished_job_tasks: dict[int, int] = {}  # job id → completed tasks, for jobs that ended

    def run(self) -> None:
        try:
            # Scanned once: the phase starts with two live executors and none is replaced before the kill.
            processes = executor_processes(self.sc.applicationId)
            while not self.done.is_set() and self.record is None:
                self._poll(processes)
                time.sleep(0.01)
        except Exception as error:  # noqa: BLE001 - reported, the test fails on it
            self.error = repr(error)

    def _poll(self, processes: dict[str, psutil.Process]) -> None:
        tracker = self.sc.statusTracker()
        active_jobs = set(tracker.getActiveJobsIds())
        completed, running = 0, []
        # Ended jobs are counted from the cache, so a poll costs a few calls however many jobs the phase ran.
        for job_id in tracker.getJobIdsForGroup(self.group):
            if job_id in self.finished_job_tasks:
                completed += self.finished_job_tasks[job_id]
                continue
            job = tracker.getJobInfo(job_id)
            if job is None:
                continue
            infos = [info for info in map(tracker.getStageInfo, job.stageIds) if info is not None]
            job_tasks = sum(info.numCompletedTasks for info in infos)
            completed += job_tasks
            if job_id not in active_jobs and str(job.status) in ("SUCCEEDED", "FAILED"):
                self.finished_job_tasks[job_id] = job_tasks
            # Only a stage with tasks still waiting beyond the running ones: it cannot end in the moment
            # between this check and the kill (a one-task stage can, and then the kill falls between jobs).
            running += [info for info in infos if info.numActiveTasks > 0
                        and info.numCompletedTasks + info.numActiveTasks < info.numTasks]
        if not running or completed < self.after_tasks:
            return
        candidates = [e for e in busy_executors(self.sc) if e in processes]
        if not candidates:
            return
        victim = candidates[0]
        process = processes[victim]
        group_jobs = set(tracker.getJobIdsForGroup(self.group))
        running_jobs = [j for j in tracker.getActiveJobsIds() if j in group_jobs]
        if not running_jobs:
            return
        process.kill()  # SIGKILL: the JVM gets no chance to clean up
        try:
            process.wait(timeout=30)
        except Exception:  # noqa: BLE001 - checked below
            pass
        self.record = {
            "executor_id": victim,
            "pid": process.pid,
            "dead": _dead(process),
            "busy_executors": candidates,
            "running_jobs": running_jobs,
            "running_stages": [{"stage": i.stageId, "name": i.name, "active_tasks": i.numActiveTasks,
                                "completed_tasks": i.numCompletedTasks, "tasks": i.numTasks} for i in running],
            "completed_tasks_before": completed,
            "at": time.time(),
        }


def _dead(process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for_executors(sc, count: int, timeout: float = 300.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = live_executor_ids(sc)
        if len(ids) >= count and len(executor_processes(sc.applicationId)) >= count:
            return ids
        time.sleep(0.5)
    raise TimeoutError(f"fewer than {count} executors after {timeout:.0f} s: {live_executor_ids(sc)}")


def run_driver(args: argparse.Namespace) -> None:
    from pyspark.sql import SparkSession

    from spark_retrieval.columns import ITEM_ID
    from spark_retrieval.data import load_movielens, temporal_split
    from spark_retrieval.evaluation import evaluate
    from spark_retrieval.models import ALS, ItemCF, RetrievalModel, Swing

    import spark_retrieval

    spark = SparkSession.builder.getOrCreate()
    sc = spark.sparkContext
    sc.setLogLevel("WARN")
    work = Path(args.work)
    report: dict = {"app_id": sc.applicationId, "library": spark_retrieval.__file__, "runs": {}}

    ratings = load_movielens(spark, "ml-latest-small", args.data).ratings
    split = temporal_split(ratings, holdout=3, positive_threshold=2.0)
    split.train.write.mode("overwrite").parquet(str(work / "split" / "train"))
    split.test.write.mode("overwrite").parquet(str(work / "split" / "test"))
    train = spark.read.parquet(str(work / "split" / "train"))
    test = spark.read.parquet(str(work / "split" / "test"))
    catalog = train.select(ITEM_ID).distinct()

    estimators = {
        "item_cf": lambda: ItemCF(seed=0),
        "swing": lambda: Swing(seed=0),
        "als": lambda: ALS(rank=16, max_iter=8, checkpoint_interval=3, seed=0,
                           checkpoint_dir=str(work / "checkpoints")),
    }

    def fit_and_save(mode: str, name: str) -> dict:
        model = estimators[name]().fit(train)
        model.save(str(work / mode / "models" / name))
        if name == "als":  # the retrieval: exact top-K over the saved factors
            loaded = RetrievalModel.load(str(work / mode / "models" / name))
            loaded.recommend(test, K).write.mode("overwrite").parquet(str(work / mode / "als_recommendations"))
        return {}

    def evaluate_all(mode: str) -> dict:
        metrics = {}
        for name in MODELS:
            model = RetrievalModel.load(str(work / mode / "models" / name))
            metrics[name] = evaluate(model.recommend(test, K), test, k=K, catalog=catalog)
        return {"metrics": metrics}

    def run_phase(mode: str, phase: str, group: str) -> dict:
        executors_before = wait_for_executors(sc, 2)
        sc.setJobGroup(group, f"{mode} run, {phase}")
        killer = None
        if mode == "killed":
            after_tasks = max(1, int(KILL_AT_SHARE * report["runs"]["clean"][phase]["tasks_completed"]))
            killer = ExecutorKiller(sc, group, after_tasks)
            killer.start()
        started = time.monotonic()
        output = fit_and_save(mode, phase) if phase in MODELS else evaluate_all(mode)
        seconds = time.monotonic() - started
        if killer:
            killer.done.set()
            killer.join(timeout=60)
        tracker = sc.statusTracker()
        job_ids = sorted(tracker.getJobIdsForGroup(group))
        infos = group_stage_infos(sc, group)
        return {
            **output,
            "group": group,
            "seconds": round(seconds, 1),
            "executors_before": executors_before,
            "executors_after": live_executor_ids(sc),
            "tasks_completed": sum(i.numCompletedTasks for i in infos),
            "jobs": {str(j): str(tracker.getJobInfo(j).status) for j in job_ids if tracker.getJobInfo(j)},
            "stages_retried_or_failed": sorted(
                i.stageId for i in infos if i.numFailedTasks > 0 or i.currentAttemptId > 0
            ),
            "kill": killer.record if killer else None,
            "killer_error": killer.error if killer else None,
        }

    for mode in ("clean", "killed"):
        phases = report["runs"][mode] = {}
        for phase in PHASES:
            attempts = []
            # A kill can miss: the status store runs behind the tasks, so the victim's tasks may all have
            # ended just before the JVM died, and nothing later needs its output. Such a kill tests nothing,
            # so the phase runs again (its output is overwritten) until a kill costs Spark a task.
            for attempt in range(1 if mode == "clean" else KILL_ATTEMPTS):
                result = run_phase(mode, phase, f"{mode}-{phase}" + (f"-{attempt}" if attempt else ""))
                attempts.append(result)
                print(f"[failure-driver] {result['group']}: {json.dumps(result, default=str)}", file=sys.stderr,
                      flush=True)
                if result["stages_retried_or_failed"] or result["killer_error"]:
                    break
            phases[phase] = {**attempts[-1], "missed_kills": [a["kill"] for a in attempts[:-1]]}
    Path(args.report).write_text(json.dumps(report, indent=2, default=str))
    spark.stop()


# == test side: pytest =================================================================================

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def failure_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("executor-failure")
    shipped = root / "spark_retrieval.zip"
    subprocess.run([str(REPO / "scripts" / "build_pyfiles.sh"), str(shipped)], cwd=REPO, check=True,
                   capture_output=True)
    data = write_bundled_as_csv(root / "ml-latest-small")
    work, report = root / "work", root / "report.json"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    with StandaloneCluster(root / "cluster") as cluster:
        started = time.monotonic()
        result = subprocess.run(
            [str(SPARK_SUBMIT), "--master", cluster.master_url, "--py-files", str(shipped),
             "--driver-memory", "1g", "--executor-memory", "1g", "--conf", "spark.ui.enabled=false",
             # Shuffle stages with more tasks than the two executor cores (no coalescing to one task), so the
             # killer finds a stage with tasks still waiting even in the evaluator's many short jobs.
             "--conf", "spark.sql.shuffle.partitions=8", "--conf", "spark.sql.adaptive.coalescePartitions.enabled=false",
             __file__, "--driver", "--data", str(data), "--work", str(work), "--report", str(report)],
            cwd=root, env=env, capture_output=True, text=True, timeout=1800,
        )
        (root / "driver.log").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, (
            f"driver exit {result.returncode}; log: {root / 'driver.log'}\n"
            f"stdout tail (the Python driver's stderr too):\n{result.stdout[-5000:]}\n{cluster.logs()}"
        )
        assert report.is_file(), f"the driver wrote no report; log: {root / 'driver.log'}"
        seconds = time.monotonic() - started
        # The workers' own account of their executors' ends (SIGKILL: exit status 137).
        worker_lines = [line for log in sorted((root / "cluster" / "logs").glob("worker-*.log"))
                        for line in log.read_text(errors="replace").splitlines() if "finished with state" in line]
    print(f"driver: {seconds:.0f} s; log: {root / 'driver.log'}")
    return {"report": json.loads(report.read_text()), "work": work, "seconds": seconds, "zip": shipped,
            "worker_lines": worker_lines}


@pytest.mark.parametrize("phase", PHASES)
def test_executor_killed_mid_phase_and_the_phase_finished(failure_run, phase):
    report = failure_run["report"]
    assert "/spark_retrieval.zip/spark_retrieval/" in report["library"]  # the driver ran the shipped zip
    killed = report["runs"]["killed"][phase]
    assert killed["killer_error"] is None, killed["killer_error"]
    kill = killed["kill"]
    assert kill is not None, f"{phase}: the phase ended before an executor could be killed: {killed}"
    assert kill["dead"], f"{phase}: executor {kill['executor_id']} (pid {kill['pid']}) survived SIGKILL"
    # Mid-job: the phase had a running job and a stage with tasks in flight when the JVM was killed.
    assert kill["running_jobs"] and kill["running_stages"], kill
    assert kill["executor_id"] in killed["executors_before"]
    assert kill["executor_id"] not in killed["executors_after"]
    # Spark noticed: some stage of the phase lost tasks or was attempted again.
    assert killed["stages_retried_or_failed"], f"{phase}: no failed task or stage retry recorded: {killed}"
    assert killed["jobs"] and set(killed["jobs"].values()) == {"SUCCEEDED"}, killed["jobs"]
    clean = report["runs"]["clean"][phase]
    assert clean["kill"] is None and set(clean["jobs"].values()) == {"SUCCEEDED"}
    assert not clean["stages_retried_or_failed"], clean


def test_workers_saw_their_executors_killed(failure_run):
    """Independent of the driver's record: each kill shows in a worker's log as one of the application's
    executors ending on SIGKILL (exit status 137), and there is no other such end."""
    runs = [failure_run["report"]["runs"]["killed"][phase] for phase in PHASES]
    killed = [kill for run in runs for kill in [*run["missed_kills"], run["kill"]] if kill is not None]
    app = failure_run["report"]["app_id"]
    lines = [line for line in failure_run["worker_lines"] if app in line]
    sigkilled = sorted(line for line in lines if "Command exited with code 137" in line)
    assert len(sigkilled) == len(killed), "\n".join(lines)
    for kill in killed:
        assert any(f"{app}/{kill['executor_id']} " in line for line in sigkilled), (kill, sigkilled)


@pytest.mark.parametrize("model", MODELS)
def test_saved_model_equals_the_clean_run(failure_run, model):
    work = failure_run["work"]
    exact = {"item_cf": [("neighbours", "item_id")], "swing": [("neighbours", "item_id")], "als": [("seen", "user_id")]}
    for name, key in exact[model]:
        assert_same_table(work / "clean" / "models" / model / name, work / "killed" / "models" / model / name, [key])
    if model == "als":
        # Factors equal up to float rounding: the rerun tasks may sum the normal equations in another order.
        for name, key in (("user_factors", "user_id"), ("item_factors", "item_id")):
            clean = rows(work / "clean" / "models" / model / name, [key])
            killed = rows(work / "killed" / "models" / model / name, [key])
            assert len(clean) > 500
            assert_close_vectors(clean, killed, f"{model}/{name}")


def test_als_retrieval_equals_the_clean_run(failure_run):
    work = failure_run["work"]
    clean = rows(work / "clean" / "als_recommendations", ["query_id"])
    killed = rows(work / "killed" / "als_recommendations", ["query_id"])
    assert len(clean) == len(killed) > 1000
    assert [row[0] for row in clean] == [row[0] for row in killed]

    def ranking(entries):
        return [(dict(entry)["item_id"], dict(entry)["score"]) for entry in entries]

    differ = [a[0] for a, b in zip(clean, killed) if not same_ranking(ranking(a[1]), ranking(b[1]))]
    assert not differ, f"{len(differ)} of {len(clean)} top-{K} lists differ beyond near-ties, e.g. queries {differ[:5]}"
    exact = sum(a == b for a, b in zip(clean, killed))
    print(f"ALS top-{K} lists identical bit for bit: {exact} of {len(clean)}")


def test_metrics_equal_the_clean_run(failure_run):
    runs = failure_run["report"]["runs"]
    clean, killed = runs["clean"]["evaluate"]["metrics"], runs["killed"]["evaluate"]["metrics"]
    assert set(clean) == set(MODELS)
    for model in MODELS:
        assert clean[model]["queries"] > 1000
        # Means over queries: equal up to the order of floating-point additions; for ALS, one query's worth
        # (a near-tie at the cut-off going the other way after rounding).
        slack = 1.0 / clean[model]["queries"] if model == "als" else 1e-12
        assert killed[model] == pytest.approx(clean[model], rel=1e-9, abs=slack), model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="driver of tests/test_executor_failure.py")
    parser.add_argument("--driver", action="store_true", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--report", required=True)
    run_driver(parser.parse_args())
