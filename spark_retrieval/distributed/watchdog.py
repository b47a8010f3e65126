"""A per-process progress watchdog for distributed training: no progress for ``timeout`` seconds → exit.

Collective timeouts alone do not end every wait: ranks that wait in *different* collectives (Horovod
matches them by name) wait for ever — Horovod's own stall shutdown did not fire in our tests — and a
process stuck outside any collective (a hung read) is never timed out by Gloo. So each training
process of a multi-process run starts a ``Watchdog`` and calls ``beat()`` whenever it makes progress
(every optimizer step, every epoch boundary); when no beat comes for ``timeout`` seconds a daemon
thread prints why and ends the process with exit code ``EXIT_CODE`` (124, as ``timeout(1)``). Horovod's
and PyTorch's blocking collectives release the GIL, so the thread runs while the main one waits.
Its peers then see a dead process and fail in turn, and the launcher reports the failure.
"""

from __future__ import annotations

import os
import sys
import threading
import time

EXIT_CODE = 124


class Watchdog:
    def __init__(self, timeout: float, label: str = "training"):
        self.timeout = float(timeout)
        self.label = label
        self._last = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="spark-retrieval-watchdog", daemon=True)

    def __enter__(self) -> "Watchdog":
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopped.set()

    def beat(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        interval = max(0.1, min(5.0, self.timeout / 10))
        while not self._stopped.wait(interval):
            idle = time.monotonic() - self._last
            if idle > self.timeout:
                print(
                    f"[{self.label}] no progress for {idle:.0f}s (failure_timeout={self.timeout:.0f}s): a peer "
                    "process is hung or the processes wait on different collectives; exiting with code "
                    f"{EXIT_CODE}",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(EXIT_CODE)
