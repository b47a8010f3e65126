"""The ``torch_distributor`` backend: ``pyspark.ml.torch.distributor.TorchDistributor``, DDP over Gloo.

With a local master the processes are started on the driver machine (``local_mode=True``, which is
where a local master's executors live anyway); on a cluster they run inside barrier tasks on the
executors (``local_mode=False``). TorchDistributor returns rank 0's result only.

Results in local mode. TorchDistributor runs every process of a local-mode job from one generated
script that pickles the function's return value to one shared ``output.pickle`` — every rank writes
the same file, so the driver reads whichever rank finished last (rank 1's ``None``-state result, or
a torn file, in a race that rank 0 usually but not always wins). The launcher therefore wraps the
function: rank 0 writes its result to a file of the launcher's own (atomically), every rank returns
None to TorchDistributor, and ``run`` reads rank 0's file. On a cluster each rank has its own task
and TorchDistributor returns partition 0's result, so no wrapping is needed there.

Failures: torchrun stops the other processes as soon as one exits with an error and prints which rank
failed first ("Root Cause (first observed failure)"). In local mode that summary only reaches the
driver's stdout (PySpark's wrapper around torchrun exits 0 whatever happened, and TorchDistributor then
raises "TorchDistributor failed during training" because no output file was written), so ``run`` keeps
the tail of stdout while it runs and turns the failure into a ``TrainingFailedError`` naming that rank
and its exit code. Collectives time out after ``failure_timeout`` seconds.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import functools
import os
import pickle
import re
import shutil
import sys
import tempfile
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..errors import TrainingFailedError
from .processes import DEFAULT_FAILURE_TIMEOUT, describe_exit_code

ROOT_RESULT_FILE = "rank0_result.pickle"
# torchrun's ChildFailedError summary: "Root Cause (first observed failure): [0]: ... rank: 1 (local_rank: 1)
# exitcode: -9 (pid: ...)"
ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)
TAIL_LINES = 400


class TorchDistributorLauncher:
    backend = "torch_distributor"

    def __init__(self, num_proc: int, local_mode: bool):
        from pyspark.ml.torch.distributor import TorchDistributor  # noqa: F401  (fails here, not mid-fit)

        self.num_proc = num_proc
        self.local_mode = local_mode

    def run(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        from pyspark.ml.torch.distributor import TorchDistributor

        distributor = TorchDistributor(num_processes=self.num_proc, local_mode=self.local_mode, use_gpu=False)
        if not self.local_mode:
            return [_run(distributor, fn, *args)]
        directory = tempfile.mkdtemp(prefix="torch-distributor-")
        try:
            path = os.path.join(directory, ROOT_RESULT_FILE)
            _run(distributor, functools.partial(keep_root_result, path, fn), *args)
            if not os.path.exists(path):
                raise TrainingFailedError("TorchDistributor training ended without a result from rank 0", rank=0)
            with open(path, "rb") as stream:
                return [pickle.load(stream)]
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def keep_root_result(path: str, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn`` in a torchrun process; rank 0 writes its result to ``path`` (temporary file, then rename)."""
    result = fn(*args)
    if int(os.environ.get("RANK", "0")) == 0:
        temporary = f"{path}.tmp"
        with open(temporary, "wb") as stream:
            pickle.dump(result, stream, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, path)
    return None


def _run(distributor, fn: Callable[..., Any], *args: Any) -> Any:
    with _stdout_tail() as tail:
        try:
            return distributor.run(fn, *args)
        except RuntimeError as error:
            failure = root_cause(str(error), "".join(tail))
            if failure is None:
                raise
            raise failure from error


class _Tee:
    """Writes through to ``stream`` and keeps the last lines written."""

    def __init__(self, stream, lines: collections.deque):
        self._stream = stream
        self._lines = lines

    def write(self, text: str) -> int:
        self._lines.append(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _stdout_tail():
    """Keep what is printed to ``sys.stdout`` meanwhile (where TorchDistributor streams torchrun's output)."""
    lines: collections.deque = collections.deque(maxlen=TAIL_LINES)
    original = sys.stdout
    sys.stdout = _Tee(original, lines)
    try:
        yield lines
    finally:
        sys.stdout = original


def root_cause(message: str, output: str = "") -> TrainingFailedError | None:
    """The ``TrainingFailedError`` for TorchDistributor's failure ``message`` and torchrun's ``output``, else None."""

    if "failed with return code" not in message and "TorchDistributor failed" not in message:
        return None
    match = ROOT_CAUSE.search(f"{message}\n{output}")
    if match is None:
        return TrainingFailedError(f"TorchDistributor training failed: {message.strip()[-2000:]}")
    rank, code = int(match.group(1)), int(match.group(2))
    return TrainingFailedError(
        f"TorchDistributor training failed: the process of rank {rank} was the first to exit "
        f"({describe_exit_code(code)})",
        rank=rank,
        exit_code=code,
    )


class TorchCollective:
    def __init__(self, nics: Sequence[str] | None = None, failure_timeout: int = DEFAULT_FAILURE_TIMEOUT):
        if nics:
            os.environ.setdefault("GLOO_SOCKET_IFNAME", ",".join(nics))
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=failure_timeout))
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", self.size))

    def prepare(self, module, optimizer):
        if self.size == 1:  # nothing to sync or average
            return module, optimizer
        # DDP broadcasts rank 0's parameters at construction and averages gradients in backward.
        return DistributedDataParallel(module), optimizer

    def broadcast_object(self, obj: Any) -> Any:
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def allgather_object(self, obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, obj)
        return gathered

    def sum(self, value: float) -> float:
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return float(tensor.item())

    def lost_peer(self, error: BaseException) -> bool:
        return False  # torchrun stops the other processes itself and reports the first failure

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
