"""Shared plumbing of the benchmark scripts: sessions, timing, medians, memory and stage times, JSON records.

Not a benchmark itself. Every script imports it as ``_harness`` (``python benchmarks/x.py`` puts this folder
first on ``sys.path``).

* ``bench_session``: a ``local[N]`` session from ``get_spark`` (the library's local defaults), with the Spark UI
  bound to 127.0.0.1 on a free port when stage times are wanted (its REST API is the only way to read them
  here: no sparkmeasure jar can be fetched).
* ``MemorySampler``: a thread that samples the resident set of this Python process and every descendant (the
  driver JVM that ``pyspark`` launches and the Python workers that JVM forks) every ``interval`` seconds. In
  ``local[N]`` the executors are threads of the driver JVM, so "executor memory" is part of the JVM's RSS;
  the Python workers (where ``mapInArrow``/``mapInPandas`` code runs) are reported separately.
* ``StageLog``: stage records from ``/api/v1/applications/<id>/stages``; ``since(mark)`` gives the stages a
  phase ran, summarised by name.
* ``reference_data``: synthetic interactions written once to parquet under ``--data-dir`` and reused (the
  generator is deterministic, so a cached file is the same data).
* ``record``: appends one JSON object per line to ``benchmarks/results/<name>.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import statistics
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA_DIR = os.environ.get("SPARK_RETRIEVAL_BENCH_DATA", "/tmp/spark-retrieval-bench")

# MovieLens-1M's shape: 6,040 users, 3,706 rated items, 1,000,209 ratings.
ML1M_USERS, ML1M_ITEMS, ML1M_INTERACTIONS = 6040, 3706, 1_000_000

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


# -- sizes ------------------------------------------------------------------------------------------
def add_run_options(parser, driver_memory: str = "4g", runs_help: str = "timed runs; the median counts") -> None:
    """The options every benchmark script takes: timed runs, seed, Spark master, driver memory, data cache."""
    parser.add_argument("--runs", type=int, default=3, help=runs_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default=driver_memory)
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="where generated data sets are cached as parquet")


def parse_size(text: str) -> int:
    """``1M`` → 1,000,000; ``500K`` → 500,000; plain integers as they are."""
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000, "G": 1_000_000_000}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    return int(float(number) * scale)


def size_label(value: int) -> str:
    for suffix, scale in (("M", 1_000_000), ("K", 1_000)):
        if value >= scale and value % (scale // 10) == 0:
            return f"{value / scale:g}{suffix}"
    return str(value)


def movielens_shape(interactions: int) -> tuple[int, int, int]:
    """Users and items of MovieLens-1M grown with the square root of ``interactions / 1M``."""
    factor = math.sqrt(interactions / ML1M_INTERACTIONS)
    return round(ML1M_USERS * factor), round(ML1M_ITEMS * factor), interactions


# -- machine state ----------------------------------------------------------------------------------
def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
    }


def load_text() -> str:
    one, five, fifteen = load_average()
    return f"load {one:.2f}/{five:.2f}/{fifteen:.2f}"


# -- Spark session ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bench_session(master: str = "local[2]", app_name: str = "spark-retrieval-bench", driver_memory: str | None = None,
                  ui: bool = False, conf: dict | None = None):
    """A local session with the library's defaults; ``ui=True`` turns the UI on (127.0.0.1, free port)."""
    from spark_retrieval.session import get_spark

    settings = dict(conf or {})
    if driver_memory:
        settings["spark.driver.memory"] = driver_memory
    if ui:
        settings.update({"spark.ui.enabled": "true", "spark.ui.port": str(free_port()),
                         "spark.ui.retainedStages": "100000", "spark.ui.retainedTasks": "1000",
                         "spark.ui.retainedJobs": "100000", "spark.sql.ui.retainedExecutions": "1000"})
    return get_spark(master=master, app_name=app_name, conf=settings)


JAVA_BLAS_OPTIONS = "-Ddev.ludovic.netlib.blas.nativeLib=libnone.so -Ddev.ludovic.netlib.lapack.nativeLib=libnone.so"
"""JVM options that make netlib's loader fail, i.e. MLlib's pure-Java BLAS/LAPACK (for before/after timings)."""


def session_settings(spark) -> dict:
    keys = ("spark.master", "spark.driver.memory", "spark.sql.shuffle.partitions", "spark.default.parallelism",
            "spark.sql.adaptive.enabled", "spark.sql.execution.arrow.maxRecordsPerBatch",
            "spark.sql.autoBroadcastJoinThreshold")
    conf = spark.sparkContext.getConf()
    return {key: conf.get(key, spark.conf.get(key, None)) for key in keys}


# -- timing -----------------------------------------------------------------------------------------
def timed(action):
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def tree_cpu_seconds() -> float:
    """User + system CPU seconds used so far by this process and its descendants (driver JVM, PySpark daemon,
    Python workers), including descendants that have exited: each live process counts its own time plus that of
    the children it has reaped (the PySpark daemon reaps its workers). Differences of it measure a phase's work
    in a way that load from other jobs hardly changes, unlike wall time (which is why the scripts print it next
    to wall time)."""
    root = psutil.Process()
    total = 0.0
    for process in [root] + root.children(recursive=True):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def timed_cpu(action):
    """``(result, wall seconds, CPU seconds of the process tree)``."""
    cpu = tree_cpu_seconds()
    start = time.perf_counter()
    result = action()
    wall = time.perf_counter() - start
    return result, wall, tree_cpu_seconds() - cpu


def median(values):
    return statistics.median(values)


def runs_text(values, unit="s", digits=2) -> str:
    return ", ".join(f"{value:.{digits}f}{unit}" for value in values)


# -- memory -----------------------------------------------------------------------------------------
class MemorySampler:
    """Peak RSS of the driver Python process, the JVM(s) below it, and the Python workers, sampled in a thread.

    Peaks are per component (each its own maximum) plus the peak of their sum at one instant.
    ``reset()`` starts a new phase.
    """

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.root = psutil.Process()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.reset()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.peaks = {"driver_python": 0, "jvm": 0, "python_workers": 0, "total": 0}
            self.samples = 0

    def sample(self) -> dict:
        usage = {"driver_python": 0, "jvm": 0, "python_workers": 0}
        try:
            usage["driver_python"] = self.root.memory_info().rss
            children = self.root.children(recursive=True)
        except psutil.Error:
            return {**usage, "total": 0}
        for child in children:
            try:
                name = child.name()
                rss = child.memory_info().rss
            except psutil.Error:
                continue
            if name.startswith("java"):
                usage["jvm"] += rss
            elif name.startswith("python"):
                usage["python_workers"] += rss
        usage["total"] = sum(usage.values())
        return usage

    def _run(self) -> None:
        while not self._stop.is_set():
            usage = self.sample()
            with self._lock:
                for key, value in usage.items():
                    self.peaks[key] = max(self.peaks[key], value)
                self.samples += 1
            self._stop.wait(self.interval)

    def peaks_mib(self) -> dict:
        usage = self.sample()  # one last look, so a phase shorter than the interval still counts
        with self._lock:
            for key, value in usage.items():
                self.peaks[key] = max(self.peaks[key], value)
            return {key: round(value / 2**20) for key, value in self.peaks.items()}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


# -- stage times from the Spark UI's REST API -------------------------------------------------------
class StageLog:
    """Stages of the running application from the UI's REST API (``ui=True`` sessions), attributed to a phase
    by job group: run the phase inside ``with log.group(name):``, then ``log.summary(name)``."""

    def __init__(self, spark):
        self.context = spark.sparkContext
        self.url = self.context.uiWebUrl
        self.app = self.context.applicationId
        if self.url:
            self.url = self.url.replace("://" + socket.gethostname(), "://127.0.0.1")

    def _get(self, path: str) -> list[dict]:
        if not self.url:
            return []
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/applications/{self.app}/{path}", timeout=30) as reply:
                return json.load(reply)
        except OSError:
            return []

    @contextmanager
    def group(self, name: str):
        self.context.setJobGroup(name, name)
        try:
            yield
        finally:
            self.context.setJobGroup("(between phases)", "(between phases)")

    def summary(self, name: str, top: int = 8) -> dict:
        """Completed stages of group ``name``, grouped by stage name: count, wall seconds (submission to
        completion, summed; stages can overlap), executor run and CPU seconds, shuffle read/write MiB; the
        biggest first. Waits (up to 15 s) for the listener to record the group's last jobs."""
        deadline = time.time() + 15
        while True:
            jobs = [job for job in self._get("jobs") if job.get("jobGroup") == name]
            if all(job.get("status") != "RUNNING" for job in jobs) or time.time() > deadline:
                break
            time.sleep(0.5)
        wanted = {stage for job in jobs for stage in job.get("stageIds", [])}
        groups: dict[str, dict] = {}
        for stage in self._get("stages?status=complete"):
            if stage["stageId"] not in wanted:
                continue
            group = groups.setdefault(stage.get("name", "?"), {"stages": 0, "tasks": 0, "wall_s": 0.0, "run_s": 0.0,
                                                               "cpu_s": 0.0, "shuffle_read_mib": 0.0,
                                                               "shuffle_write_mib": 0.0, "spill_mib": 0.0})
            group["stages"] += 1
            group["tasks"] += stage.get("numCompleteTasks", 0)
            group["wall_s"] += _stage_wall(stage)
            group["run_s"] += stage.get("executorRunTime", 0) / 1000
            group["cpu_s"] += stage.get("executorCpuTime", 0) / 1e9
            group["shuffle_read_mib"] += (stage.get("shuffleLocalBytesRead", 0) + stage.get("shuffleRemoteBytesRead", 0)) / 2**20
            group["shuffle_write_mib"] += stage.get("shuffleWriteBytes", 0) / 2**20
            group["spill_mib"] += stage.get("memoryBytesSpilled", 0) / 2**20
        ordered = sorted(groups.items(), key=lambda item: -item[1]["wall_s"])
        summary = {name: {key: round(value, 2) if isinstance(value, float) else value for key, value in group.items()}
                   for name, group in ordered[:top]}
        if len(ordered) > top:
            rest = [group for _, group in ordered[top:]]
            summary["(other stages)"] = {"stages": sum(g["stages"] for g in rest),
                                         "wall_s": round(sum(g["wall_s"] for g in rest), 2),
                                         "run_s": round(sum(g["run_s"] for g in rest), 2)}
        return summary

    def executor_peaks(self) -> dict:
        """Peak JVM heap and off-heap memory Spark's executor metrics report for the driver (MiB)."""
        peaks = {}
        for executor in self._get("executors"):
            metrics = executor.get("peakMemoryMetrics") or {}
            for key in ("JVMHeapMemory", "JVMOffHeapMemory", "OnHeapExecutionMemory", "OnHeapStorageMemory"):
                if metrics.get(key):
                    peaks[key] = max(peaks.get(key, 0), round(metrics[key] / 2**20))
        return peaks


def _stage_wall(stage: dict) -> float:
    start, end = stage.get("submissionTime"), stage.get("completionTime")
    if not start or not end:
        return 0.0
    parse = lambda text: datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")
    return (parse(end) - parse(start)).total_seconds()


def stage_lines(summary: dict) -> list[str]:
    lines = []
    for name, group in summary.items():
        extra = ""
        if "cpu_s" in group:
            extra = (f", cpu {group['cpu_s']:.1f} s, shuffle r/w {group['shuffle_read_mib']:.0f}/"
                     f"{group['shuffle_write_mib']:.0f} MiB")
        lines.append(f"    {group['wall_s']:7.1f} s wall, {group['run_s']:7.1f} s task time in {group['stages']} stage(s): {name}{extra}")
    return lines


# -- data -------------------------------------------------------------------------------------------
def reference_data(spark, users: int, items: int, interactions: int, seed: int = 0, data_dir: str = DEFAULT_DATA_DIR) -> str:
    """Path of a parquet folder with ``synthetic_interactions(spark, users, items, interactions, seed)``,
    written on first use and reused afterwards."""
    from spark_retrieval.data import synthetic

    # The generator's source is part of the key: a changed generator never reuses old files.
    version = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:10]
    path = Path(data_dir) / f"synthetic_u{users}_i{items}_n{interactions}_s{seed}_{version}.parquet"
    synthetic_interactions = synthetic.synthetic_interactions
    if not (path / "_SUCCESS").exists():
        synthetic_interactions(spark, users, items, interactions, seed=seed).write.mode("overwrite").parquet(str(path))
    return str(path)


# -- records ----------------------------------------------------------------------------------------
RESULT_PREFIX = "RESULT "


def emit_result(result: dict) -> None:
    """Prints a worker process's result as the one line ``run_worker_process`` reads back."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_worker_process(command: list[str], worker: str) -> dict:
    """Runs a benchmark's worker ``command`` in a fresh Python process and returns its last emitted result;
    exits with the worker's last stderr lines when it fails."""
    import subprocess

    completed = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if completed.returncode != 0 or not lines:
        sys.exit(f"worker {worker} failed (exit {completed.returncode}):\n" + "\n".join(completed.stderr.splitlines()[-20:]))
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def record(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.jsonl"
    entry = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
             "load_average": load_average(), **payload}
    with path.open("a") as out:
        out.write(json.dumps(entry, default=_json_default) + "\n")
    return path


def _json_default(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
    except ImportError:
        pass
    return str(value)


@contextmanager
def phase(label: str):
    """Print a phase's start and end with the load average (to stderr, so stdout keeps the figures)."""
    print(f"[{label}] start, {load_text()}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    print(f"[{label}] done in {time.perf_counter() - start:.1f} s, {load_text()}", file=sys.stderr, flush=True)
