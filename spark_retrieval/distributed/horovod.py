"""The ``horovod`` backend: ``horovod.spark.run`` with Gloo; gradients averaged by ``hvd.DistributedOptimizer``."""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch

from ..errors import MissingDependencyError

INSTALL_HINT = (
    "Horovod is not installed in this Python environment: build it with `bash scripts/install_horovod.sh` "
    "(CPU, Gloo, a few minutes), or train with backend='torch_distributor'"
)


def require_horovod() -> None:
    """Raise ``MissingDependencyError`` saying how to install Horovod when ``horovod.torch``/``horovod.spark`` fail."""
    try:
        import horovod.spark  # noqa: F401
        import horovod.torch  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"{INSTALL_HINT} ({exc})") from None


class HorovodLauncher:
    backend = "horovod"

    def __init__(self, num_proc: int, nics: Sequence[str] | None = None, start_timeout: int = 600):
        require_horovod()
        self.num_proc = num_proc
        self.nics = list(nics) if nics else None
        self.start_timeout = start_timeout

    def run(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        import horovod.spark

        return horovod.spark.run(
            fn,
            args=args,
            num_proc=self.num_proc,
            start_timeout=self.start_timeout,
            nics=self.nics,
            use_gloo=True,
            env=dict(os.environ),
            verbose=0,
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
        self.hvd.broadcast_parameters(module.state_dict(), root_rank=0)
        distributed = self.hvd.DistributedOptimizer(optimizer, named_parameters=module.named_parameters())
        return module, distributed

    def broadcast_object(self, obj: Any) -> Any:
        return self.hvd.broadcast_object(obj, root_rank=0)

    def allgather_object(self, obj: Any) -> list[Any]:
        return self.hvd.allgather_object(obj)

    def sum(self, value: float) -> float:
        total = self.hvd.allreduce(torch.tensor([value], dtype=torch.float64), op=self.hvd.Sum)
        return float(total.item())

    def close(self) -> None:
        self.hvd.shutdown()
