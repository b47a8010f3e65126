"""Smoke test: a 2-process Horovod (Gloo, CPU) allreduce launched through ``horovod.spark.run``.

Horovod is an optional, source-built dependency: install it with ``scripts/install_horovod.sh``.
Without it (or with a build lacking the torch extension / Gloo) the test is skipped.
"""

from __future__ import annotations

import pytest

from horovod_available import requires_horovod


pytestmark = [
    pytest.mark.slow,
    requires_horovod,
]

NUM_PROC = 2  # the `spark` fixture is local[2]: one Spark task slot per Horovod rank


def test_horovod_spark_run_gloo_allreduce(spark):
    import horovod.spark

    # Defined inside the test so cloudpickle ships it by value: the Horovod worker processes
    # (`python -m horovod.spark.task.gloo_exec_fn`) cannot import this test module.
    def allreduce_fn():
        import torch

        import horovod.torch as hvd

        hvd.init()
        try:
            summed = hvd.allreduce(torch.tensor([float(hvd.rank() + 1)]), op=hvd.Sum, name="smoke")
            return hvd.rank(), hvd.size(), float(summed.item())
        finally:
            hvd.shutdown()

    results = horovod.spark.run(
        allreduce_fn,
        num_proc=NUM_PROC,
        use_gloo=True,
        nics=["lo"],  # local mode: keep the driver/task services and Gloo on loopback
        start_timeout=120,  # fail fast instead of the 600 s default if the tasks cannot start
        verbose=0,
    )

    expected = float(sum(range(1, NUM_PROC + 1)))
    assert sorted(results) == [(rank, NUM_PROC, expected) for rank in range(NUM_PROC)]
