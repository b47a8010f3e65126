"""The ``process`` backend: one training process of its own, started by the driver on its host.

What ``backend="auto"`` picks for one process on a local master, where the driver's host is the only host.
It runs the same training function as Horovod with one process, in a process as fresh as Horovod's (nothing
in it has run torch before the training pins its CPU kernels), without Horovod's services, Spark tasks and
Gloo rendezvous: those take about 14 s per fit here and a single process has nobody to meet. The function
and its arguments go to the child as a pickle file and its result comes back as one; the child inherits the
driver's environment, standard output and standard error (the progress lines).

Failures: a child that exits with a non-zero code raises ``TrainingFailedError`` with rank 0 and that code.
A child whose driver is gone (killed, its terminal closed) notices within a second and exits.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from pyspark import cloudpickle

from ..errors import TrainingFailedError
from .processes import PROCESS, describe_exit_code

ORPHAN_EXIT_CODE = 70
PARENT_CHECK_SECONDS = 1.0


class ChildProcessLauncher:
    backend = PROCESS
    num_proc = 1

    def run(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        with tempfile.TemporaryDirectory(prefix="spark-retrieval-training-") as directory:
            job_path = os.path.join(directory, "job.pickle")
            result_path = os.path.join(directory, "result.pickle")
            with open(job_path, "wb") as stream:
                cloudpickle.dump((fn, args), stream)
            child = subprocess.Popen([sys.executable, "-m", __name__, job_path, result_path, str(os.getpid())])
            try:
                code = child.wait()
            finally:  # the driver is interrupted (Ctrl-C, a cancelled cell): the child must not train on
                if child.poll() is None:
                    child.kill()
                    child.wait()
            if code != 0 or not os.path.exists(result_path):
                raise TrainingFailedError(
                    f"the training process (rank 0) ended with {describe_exit_code(code)}", rank=0, exit_code=code
                )
            with open(result_path, "rb") as stream:
                return [pickle.load(stream)]


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    print("[spark-retrieval] the driver that started this training process is gone; exiting", file=sys.stderr, flush=True)
    os._exit(ORPHAN_EXIT_CODE)


def main(job_path: str, result_path: str, parent: int) -> None:
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    with open(job_path, "rb") as stream:
        fn, args = pickle.load(stream)
    result = fn(*args)
    partial = f"{result_path}.partial"
    with open(partial, "wb") as stream:
        cloudpickle.dump(result, stream)
    os.replace(partial, result_path)  # a child killed while writing leaves no result that looks whole


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
