"""The ``local`` backend: one process, the driver itself; its no-op collectives also serve ``process`` (one child process)."""

from __future__ import annotations

from typing import Any, Callable

import torch


class LocalLauncher:
    backend = "local"
    num_proc = 1

    def run(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        threads = torch.get_num_threads()
        try:
            return [fn(*args)]
        finally:
            torch.set_num_threads(threads)


class LocalCollective:
    rank = 0
    size = 1
    local_size = 1

    def prepare(self, module, optimizer):
        return module, optimizer

    def broadcast_object(self, obj: Any) -> Any:
        return obj

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def sum(self, value: float) -> float:
        return float(value)

    def lost_peer(self, error: BaseException) -> bool:
        return False

    def close(self) -> None:
        pass
