"""Distributed training launchers behind one small interface.

On the driver, ``get_launcher(backend, ...)`` returns a ``Launcher`` whose ``run(fn, *args)`` runs
``fn(*args)`` on ``num_proc`` processes and returns the results it gets back (one per rank for Horovod,
rank 0's for TorchDistributor, which only returns that one). Inside ``fn``, ``init_collective(backend)``
gives the rank's ``Collective``: rank/size, and the few collective operations a training loop needs.

Backends: ``horovod`` (``horovod.spark.run`` over Gloo), ``torch_distributor``
(``pyspark.ml.torch.distributor.TorchDistributor``, DDP over Gloo), ``process`` (one fresh process that the
driver starts on its own host: one process on a local master needs no rendezvous) and ``local`` (the driver
itself; for debugging and single-process baselines).

Failures: when a training process dies, ``run`` raises ``TrainingFailedError`` naming the rank and exit
code the backend reports, and never waits for it: a dead process's connections close, so its peers'
next collective fails at once. A peer that stops answering without dying is given up after
``failure_timeout`` seconds (the Gloo timeout of every collective and of the start-up rendezvous), and
a training process that makes no progress for that long ends itself (``watchdog.py``).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

from pyspark.sql import SparkSession

from ..errors import InvalidParameterError
from ..session import local_task_slots
from .processes import BACKENDS, DEFAULT_FAILURE_TIMEOUT, HOROVOD, LOCAL, PROCESS, TORCH_DISTRIBUTOR, describe_exit_code

__all__ = [
    "BACKENDS",
    "DEFAULT_FAILURE_TIMEOUT",
    "HOROVOD",
    "LOCAL",
    "PROCESS",
    "TORCH_DISTRIBUTOR",
    "describe_exit_code",
    "get_launcher",
    "init_collective",
]

MAX_DEFAULT_NUM_PROC = 8
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class Launcher(Protocol):
    backend: str
    num_proc: int

    def run(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """Run ``fn(*args)`` on every rank; the results that come back (rank 0's first)."""


class Collective(Protocol):
    rank: int
    size: int
    local_size: int

    def prepare(self, module, optimizer) -> tuple[Callable, Any]:
        """Sync parameters from rank 0 and return (the callable to run forward through, the optimizer to step)."""

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""

    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""

    def sum(self, value: float) -> float:
        """Sum of ``value`` over ranks."""

    def lost_peer(self, error: BaseException) -> bool:
        """Whether ``error`` is a collective failing because another process is gone (not this one's fault)."""

    def close(self) -> None:
        """Leave the process group."""


def get_launcher(
    backend: str,
    spark: SparkSession,
    num_proc: int,
    nics: Sequence[str] | None = None,
    start_timeout: int = 600,
    failure_timeout: int = DEFAULT_FAILURE_TIMEOUT,
) -> Launcher:
    """The launcher for ``backend``; fails at once (``MissingDependencyError``) when the backend is not installed.

    ``failure_timeout`` (Horovod) goes to the processes as ``HOROVOD_GLOO_TIMEOUT_SECONDS``; the
    TorchDistributor processes get theirs from ``init_collective``.
    """
    check_num_proc(num_proc)
    if backend == HOROVOD:
        from .horovod import HorovodLauncher

        check_local_slots(spark, num_proc)
        return HorovodLauncher(
            num_proc=num_proc, nics=nics, start_timeout=start_timeout, failure_timeout=failure_timeout
        )
    if backend == TORCH_DISTRIBUTOR:
        from .torch_distributor import TorchDistributorLauncher

        return TorchDistributorLauncher(num_proc=num_proc, local_mode=local_cores(spark) is not None)
    if backend in (LOCAL, PROCESS) and num_proc != 1:
        raise InvalidParameterError(f"backend={backend!r} trains on one process, got num_proc={num_proc}")
    if backend == PROCESS:
        from .child_process import ChildProcessLauncher

        return ChildProcessLauncher()
    if backend == LOCAL:
        from .local import LocalLauncher

        return LocalLauncher()
    raise InvalidParameterError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def init_collective(
    backend: str, nics: Sequence[str] | None = None, failure_timeout: int = DEFAULT_FAILURE_TIMEOUT
) -> Collective:
    """Join the process group of ``backend`` from inside a launched training function.

    ``failure_timeout``: seconds a collective waits for a peer before failing (TorchDistributor; Horovod
    reads it from the environment its launcher set).
    """
    if backend == HOROVOD:
        from .horovod import HorovodCollective

        return HorovodCollective()
    if backend == TORCH_DISTRIBUTOR:
        from .torch_distributor import TorchCollective

        return TorchCollective(nics=nics, failure_timeout=failure_timeout)
    if backend in (LOCAL, PROCESS):
        from .local import LocalCollective

        return LocalCollective()
    raise InvalidParameterError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def check_num_proc(num_proc: Any) -> None:
    if not isinstance(num_proc, int) or isinstance(num_proc, bool) or num_proc < 1:
        raise InvalidParameterError(f"num_proc must be a positive integer, got {num_proc!r}")


def local_cores(spark: SparkSession) -> int | None:
    """Task slots of a ``local``/``local[N]``/``local[*]`` master; None on a cluster."""
    return local_task_slots(spark.sparkContext.master)


def default_num_proc(spark: SparkSession) -> int:
    """A local master: 1, a process that uses all the host's cores as torch threads. More processes on one
    host only split its cores, and each repeats the per-step work that does not shrink with its share of the
    batch (the item tower over the batch's distinct items, the optimizer step over every parameter, the
    gradient exchange); measured in BENCHMARKS.md (one or two training processes on one host).
    A cluster: one process per core it offers (``defaultParallelism``), at most 8."""
    if local_cores(spark) is not None:
        return 1
    return max(1, min(spark.sparkContext.defaultParallelism, MAX_DEFAULT_NUM_PROC))


def check_local_slots(spark: SparkSession, num_proc: int) -> None:
    # Horovod needs all num_proc Spark tasks running at once; a local master cannot grow more slots.
    cores = local_cores(spark)
    if cores is not None and num_proc > cores:
        raise InvalidParameterError(
            f"num_proc={num_proc} exceeds the {cores} task slot(s) of master {spark.sparkContext.master}; "
            "Horovod would wait for tasks that never start"
        )


def default_nics(spark: SparkSession) -> list[str] | None:
    """``['lo']`` when the driver binds to loopback (local runs, tests); None lets the backend choose."""
    conf = spark.sparkContext.getConf()
    host = conf.get("spark.driver.bindAddress", None) or conf.get("spark.driver.host", None) or ""
    return ["lo"] if host in LOOPBACK_HOSTS else None
