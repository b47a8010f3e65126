"""The ``horovod`` backend: ``horovod.spark.run`` with Gloo; gradients averaged by ``hvd.DistributedOptimizer``.

Failures. Each Horovod process runs under a Spark task that waits for it and then returns normally,
whatever its exit code: a killed process does not fail its Spark task, so Spark never retries it (and
a local master never retries a task anyway: ``local[N]`` allows one failure). When a process dies,
its peers' Horovod background loop fails on the closed connection within a second and they exit too;
``horovod.spark.run`` then raises, naming the first process to exit, and cancels its Spark job group.
That error becomes a ``TrainingFailedError`` here. When the Spark task itself is lost (its Python
worker killed), the training process under it dies too; a local master aborts the job at once (measured:
the fit fails within seconds, Horovod reporting the process with no exit code), and on a cluster a
retried attempt of the task (``spark.task.maxFailures``) is not joined to the running job and is
cancelled with the job group when ``horovod.spark.run`` raises (from reading ``horovod.spark.runner``;
only local mode is tested here).

``failure_timeout`` bounds the other ways to wait for ever. It is ``HOROVOD_GLOO_TIMEOUT_SECONDS``, the
Gloo timeout of every collective and of the start-up rendezvous: a process that stops answering
(stopped, its host gone) is given up by its peers after that long. Horovod's background loop runs a
collective every few milliseconds on every rank, so a slow Python step on one rank does not trip it
(measured: a rank sleeping 20 s with a 5 s timeout). Ranks waiting in collectives the others never
join are not covered by it (nor, in our tests with 0.28.1 and Gloo, by Horovod's
``HOROVOD_STALL_SHUTDOWN_TIME_SECONDS``): the training loop's ``Watchdog`` ends such a process after
``failure_timeout`` seconds without progress. The surviving processes then exit with an error;
``horovod.spark.run`` still waits for a process that is frozen altogether (SIGSTOP) to end, or for its
Spark job to be cancelled.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Sequence

import torch

from ..errors import MissingDependencyError, TrainingFailedError
from .processes import DEFAULT_FAILURE_TIMEOUT, describe_exit_code

GLOO_TIMEOUT_VARIABLE = "HOROVOD_GLOO_TIMEOUT_SECONDS"
# horovod.runner.gloo_run: "... The first process to do so was:\nProcess name: 1\nExit code: 137"
# "Exit code: None" when the Spark task hosting the process was lost (its Python worker killed).
FIRST_FAILURE = re.compile(r"Process name:\s*(\S+)\s+Exit code:\s*(-?\d+|None)")

INSTALL_HINT = (
    "Horovod is not installed in this Python environment: build it with `bash scripts/install_horovod.sh` "
    "(CPU, Gloo, a few minutes), or train with backend='torch_distributor'"
)


def require_horovod() -> None:
    """Raise ``MissingDependencyError`` saying how to install Horovod when ``horovod.torch``/``horovod.spark``
    do not load (not installed, or a torch extension built against another torch) or Horovod lacks Gloo."""
    try:
        import horovod
        import horovod.spark  # noqa: F401
        import horovod.torch as hvd
    except Exception as exc:  # ImportError, or an OSError/RuntimeError loading the torch extension
        raise MissingDependencyError(f"{INSTALL_HINT} ({type(exc).__name__}: {exc})") from None
    if not hvd.gloo_built():
        raise MissingDependencyError(f"{INSTALL_HINT} (horovod {horovod.__version__} was built without Gloo)")


class HorovodLauncher:
    backend = "horovod"

    def __init__(
        self,
        num_proc: int,
        nics: Sequence[str] | None = None,
        start_timeout: int = 600,
        failure_timeout: int = DEFAULT_FAILURE_TIMEOUT,
    ):
        require_horovod()
        self.num_proc = num_proc
        self.nics = list(nics) if nics else None
        self.start_timeout = start_timeout
        self.failure_timeout = failure_timeout

    def run(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        import horovod.spark

        env = {**os.environ, GLOO_TIMEOUT_VARIABLE: str(int(self.failure_timeout))}
        try:
            return horovod.spark.run(
                fn,
                args=args,
                num_proc=self.num_proc,
                start_timeout=self.start_timeout,
                nics=self.nics,
                use_gloo=True,
                env=env,
                verbose=0,
            )
        except RuntimeError as error:
            failure = first_failure(str(error))
            if failure is None:
                raise
            raise failure from error


def first_failure(message: str) -> TrainingFailedError | None:
    """The ``TrainingFailedError`` for Horovod's "processes exited with non-zero status" message, else None."""
    match = FIRST_FAILURE.search(message)
    if match is None:
        return None
    name, code = match.group(1), None if match.group(2) == "None" else int(match.group(2))
    # The process name is the index of its slot in the allocation plan, i.e. its rank.
    rank = int(name) if name.isdigit() else None
    who = f"the process of rank {rank}" if rank is not None else f"process {name}"
    how = describe_exit_code(code) if code is not None else "no exit code: the Spark task running it was lost"
    return TrainingFailedError(
        f"Horovod training failed: {who} was the first to exit ({how})",
        rank=rank,
        exit_code=code,
    )


class HorovodCollective:
    def __init__(self):
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        self.rank = hvd.rank()
        self.size = hvd.size()
        self.local_size = hvd.local_size()

    def prepare(self, module, optimizer):
        if self.size == 1:  # nothing to sync or average; the wrapper would still queue every gradient per step
            return module, optimizer
        self.hvd.broadcast_parameters(module.state_dict(), root_rank=0)
        distributed = self.hvd.DistributedOptimizer(optimizer, named_parameters=module.named_parameters())
        return module, distributed

    # Explicit names: Horovod matches collectives across ranks by name, and its default name is the type of
    # the object, which differs when only rank 0 holds one (a checkpoint on rank 0, None elsewhere): the
    # ranks would then wait for each other forever.
    def broadcast_object(self, obj: Any) -> Any:
        return self.hvd.broadcast_object(obj, root_rank=0, name="spark_retrieval.broadcast_object")

    def allgather_object(self, obj: Any) -> list[Any]:
        return self.hvd.allgather_object(obj, name="spark_retrieval.allgather_object")

    def sum(self, value: float) -> float:
        total = self.hvd.allreduce(torch.tensor([value], dtype=torch.float64), op=self.hvd.Sum)
        return float(total.item())

    def lost_peer(self, error: BaseException) -> bool:
        from horovod.common.exceptions import HorovodInternalError

        return isinstance(error, HorovodInternalError)

    def close(self) -> None:
        self.hvd.shutdown()
