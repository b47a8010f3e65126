"""A Spark standalone cluster on 127.0.0.1 for tests: one master and two workers from pyspark's ``spark-class``.

    with StandaloneCluster(tmp_dir) as cluster:        # waits until both workers are ALIVE
        cluster.master_url                             # spark://127.0.0.1:<port>
        cluster.executor_processes(app_id)             # the app's CoarseGrainedExecutorBackend JVMs

Every daemon runs in its own process group with its log, work dir and local dirs under ``tmp_dir``; leaving the
``with`` block (or a failed start) kills the groups, which also ends the executors the workers launched. The
daemons bind to loopback only and get free ports for RPC and web UI; each worker offers 1 core and
``worker_memory`` to executors. If the cluster is not up within ``timeout`` seconds the error carries each
daemon's log tail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"
SPARK_SUBMIT = SPARK_HOME / "bin" / "spark-submit"
HOST = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as error:
        return f"({path}: {error})"
    return "\n".join(text[-lines:])


class ClusterError(RuntimeError):
    pass


class StandaloneCluster:
    def __init__(
        self,
        root: str | os.PathLike,
        workers: int = 2,
        worker_cores: int = 1,
        worker_memory: str = "1g",
        daemon_memory: str = "256m",
        timeout: float = 60.0,
    ):
        self.root = Path(root)
        self.num_workers = workers
        self.worker_cores = worker_cores
        self.worker_memory = worker_memory
        self.daemon_memory = daemon_memory
        self.timeout = timeout
        self.master_port = free_port()
        self.master_webui_port = free_port()
        self.master_url = f"spark://{HOST}:{self.master_port}"
        self.master_webui = f"http://{HOST}:{self.master_webui_port}"
        self.daemons: list[tuple[str, subprocess.Popen, Path]] = []

    # -- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> "StandaloneCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _environment(self, name: str) -> dict[str, str]:
        local_dirs = self.root / name / "local"
        local_dirs.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "SPARK_HOME": str(SPARK_HOME),
            "SPARK_LOCAL_IP": HOST,
            "SPARK_LOCAL_DIRS": str(local_dirs),  # the executors' shuffle and block-manager files
            "SPARK_DAEMON_MEMORY": self.daemon_memory,
            "SPARK_LOG_DIR": str(self.root / "logs"),
            "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
        }
        # Whatever a test session put on PYTHONPATH must not leak into the executors' Python.
        env.pop("PYTHONPATH", None)
        return env

    def _launch(self, name: str, cls: str, *args: str) -> None:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [str(SPARK_CLASS), cls, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._environment(name),
                cwd=self.root,
                start_new_session=True,  # its own process group: stop() kills the daemon and what it launched
                preexec_fn=_die_with_parent,
            )
        self.daemons.append((name, process, log))

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._launch("master", MASTER_CLASS, "--host", HOST, "--port", str(self.master_port),
                     "--webui-port", str(self.master_webui_port))
        for index in range(self.num_workers):
            name = f"worker-{index + 1}"
            work_dir = self.root / name / "work"
            work_dir.mkdir(parents=True, exist_ok=True)
            self._launch(name, WORKER_CLASS, "--host", HOST, "--port", str(free_port()),
                         "--webui-port", str(free_port()), "--cores", str(self.worker_cores),
                         "--memory", self.worker_memory, "--work-dir", str(work_dir), self.master_url)
        self.wait_until_ready()

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        state = None
        while time.monotonic() < deadline:
            for name, process, _ in self.daemons:
                if process.poll() is not None:
                    self._fail(f"{name} exited with code {process.returncode} during start-up")
            state = self.state()
            if state is not None and self.alive_workers(state) >= self.num_workers:
                return
            time.sleep(0.5)
        seen = "no answer" if state is None else f"{self.alive_workers(state)} alive worker(s)"
        self._fail(f"cluster not up after {self.timeout:.0f} s ({seen} at {self.master_webui}/json/)")

    def _fail(self, message: str) -> None:
        tails = "\n".join(f"--- {log} (last lines) ---\n{log_tail(log)}" for _, _, log in self.daemons)
        raise ClusterError(f"{message}\n{tails}")

    def stop(self) -> None:
        for _, process, _ in reversed(self.daemons):
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, process, _ in reversed(self.daemons):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # SIGKILL the whole group regardless: executors or Python workers may outlive their daemon.
            _signal_group(process, signal.SIGKILL)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.daemons = []

    # -- inspection ------------------------------------------------------------------------------------

    def state(self) -> dict | None:
        """The master's JSON status (workers, active apps), or None when it does not answer yet."""
        try:
            with urllib.request.urlopen(f"{self.master_webui}/json/", timeout=2) as response:
                return json.load(response)
        except (urllib.error.URLError, OSError, ValueError):
            return None

    @staticmethod
    def alive_workers(state: dict) -> int:
        return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")

    def worker_pids(self) -> list[int]:
        return [process.pid for name, process, _ in self.daemons if name.startswith("worker")]

    def executor_processes(self, app_id: str | None = None) -> list:
        """The executor JVMs (``psutil.Process``) the workers launched, for ``app_id`` when given."""
        import psutil

        found = []
        for pid in self.worker_pids():
            try:
                children = psutil.Process(pid).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for child in children:
                try:
                    command = child.cmdline()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if EXECUTOR_CLASS not in command:
                    continue
                if app_id is not None and not _argument(command, "--app-id") == app_id:
                    continue
                found.append(child)
        return found

    def logs(self) -> str:
        return "\n".join(f"--- {log} ---\n{log_tail(log)}" for _, _, log in self.daemons)


def _argument(command: list[str], flag: str) -> str | None:
    for index, part in enumerate(command[:-1]):
        if part == flag:
            return command[index + 1]
    return None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the process that started it dies, even without teardown
    (pytest killed). spark-class execs the daemon's JVM, which keeps the setting; executors exit with their worker."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # start_new_session: the group id is the daemon's pid
    except (ProcessLookupError, PermissionError):
        pass
