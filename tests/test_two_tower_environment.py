"""The trained weights depend neither on the CPU's instruction set nor on the number of torch threads.

Training processes pin torch's CPU kernels to AVX2 (``ATEN_CPU_CAPABILITY``), so a fit on an AVX-512 machine
equals one on an AVX2-only machine. Regression: the ``dssm_softmax`` benchmark row gave Recall@20 0.1378 on an
AVX-512 CPU and 0.1241 on an AVX2 one (reproduced on one AVX-512 machine with ``ATEN_CPU_CAPABILITY=avx2``). An
AVX2-only machine is simulated here by setting that variable in the driver, whose environment every Horovod
process inherits. And training runs torch's deterministic algorithms, so two runs on the same threads give the
same weights (two 2-thread runs used to differ), and this small SimpleX gets the same on 1 and 2 threads (a larger
network need not: MKL splits a long matrix product among its threads; see ``training.py``).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from spark_retrieval.data.split import temporal_split
from spark_retrieval.models.two_tower import DSSM, SimpleX
from spark_retrieval.models.two_tower.network import CPU_CAPABILITY_VARIABLE
from spark_retrieval.models.two_tower.training import THREADS_VARIABLE

from horovod_available import requires_horovod

PROBE = (
    "import torch; from spark_retrieval.models.two_tower.network import pin_cpu_capability; "
    "pin_cpu_capability(); torch.ones(4).exp().sum(); print(torch.backends.cpu.get_cpu_capability())"
)


def capability_in_subprocess(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != CPU_CAPABILITY_VARIABLE}
    result = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


NATIVE = capability_in_subprocess("import torch; print(torch.backends.cpu.get_cpu_capability())")
has_avx2 = pytest.mark.skipif(NATIVE not in ("AVX2", "AVX512"), reason=f"torch's CPU capability here is {NATIVE}")


@pytest.fixture(scope="module")
def train(spark):
    rng = np.random.default_rng(2)
    rows = [(u, int((u + t) % 40 if rng.random() < 0.6 else rng.integers(0, 40)), 4.0, t) for u in range(40) for t in range(15)]
    return temporal_split(spark.createDataFrame(rows, "user_id long, item_id long, rating double, timestamp long")).train.cache()


@has_avx2
def test_a_training_process_runs_avx2_kernels_unless_told_otherwise():
    assert capability_in_subprocess(PROBE) == "AVX2"
    assert capability_in_subprocess(PROBE, **{CPU_CAPABILITY_VARIABLE: "default"}) == "DEFAULT"  # an explicit choice wins


@pytest.mark.slow
@requires_horovod
@has_avx2
def test_sampled_softmax_fit_is_the_same_on_avx512_and_avx2(train, monkeypatch):
    settings = dict(loss="sampled_softmax", backend="horovod", num_proc=2, epochs=2, batch_size=64,
                    hidden_dims=[32, 16], embedding_dim=16, verbose=False)

    monkeypatch.delenv(CPU_CAPABILITY_VARIABLE, raising=False)  # the machine's own: AVX512 where it has it
    native = DSSM(**settings).fit(train).metadata["training"]
    monkeypatch.setenv(CPU_CAPABILITY_VARIABLE, "avx2")  # what an AVX2-only machine runs
    avx2 = DSSM(**settings).fit(train).metadata["training"]

    assert native["parameter_hashes"] == avx2["parameter_hashes"]
    for training in (native, avx2):
        environment = training["environment"]
        assert environment["torch_cpu_capability"] == "AVX2"
        assert {"torch_threads", "processes_on_host", "cpu_model", "versions", "pyspark"} <= set(environment)
        if os.path.exists("/proc/cpuinfo"):  # one name covers several CPU generations: the family and model tell them apart
            assert "(family " in environment["cpu_model"] and ", model " in environment["cpu_model"]
            assert len(environment["cpu_features"]["flags_sha256"]) == 12


def test_one_and_two_threads_give_the_same_weights(train, monkeypatch):
    settings = dict(backend="local", epochs=2, num_negatives=40, embedding_dim=16, batch_size=64, verbose=False, seed=7)
    hashes = []
    for threads in ("1", "2", "2"):
        monkeypatch.setenv(THREADS_VARIABLE, threads)
        training = SimpleX(**settings).fit(train).metadata["training"]
        assert training["environment"]["torch_threads"] == int(threads)
        hashes.append(training["parameter_hashes"])
    assert hashes[0] == hashes[1] == hashes[2]


FREED_MEMORY_PROBE = """
import resource, sys
import numpy as np
from spark_retrieval.models.two_tower.training import keep_freed_memory
if sys.argv[1] == "kept" and not keep_freed_memory():
    print("unsupported")
    sys.exit(0)
def step():  # a training step's shape of memory: several large temporaries alive at once, then all freed
    blocks = [np.ones(5_000_000, dtype=np.float32) for _ in range(4)]  # 20 MB each
    del blocks
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_a_training_process_reuses_the_memory_its_steps_free():
    """``keep_freed_memory`` (what every training process of its own calls): glibc otherwise gives a step's
    freed temporaries back to the kernel and the next step takes them again one page fault at a time."""
    faults = {}
    for mode in ("default", "kept"):
        probe = subprocess.run([sys.executable, "-c", FREED_MEMORY_PROBE, mode], capture_output=True, text=True, check=True)
        if probe.stdout.strip() == "unsupported":
            pytest.skip("the C library has no mallopt (not glibc)")
        faults[mode] = int(probe.stdout)
    assert faults["default"] > 1_000  # the probe does reproduce the faults (10,587 in 5 steps on glibc 2.36)
    assert faults["kept"] * 20 < faults["default"]
