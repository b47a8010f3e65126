"""Two-tower training on 2 processes through Horovod and TorchDistributor (local[2]), and the launcher helpers."""

import os
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from spark_retrieval.columns import QUERY_ID, RECOMMENDATIONS
from spark_retrieval.data.split import temporal_split, validation_split
from spark_retrieval.distributed import (
    check_local_slots,
    default_nics,
    default_num_proc,
    describe_exit_code,
    get_launcher,
    local_cores,
)
from spark_retrieval.distributed.horovod import first_failure
from spark_retrieval.distributed.torch_distributor import TorchDistributorLauncher, root_cause
from spark_retrieval.errors import InvalidParameterError, TrainingFailedError
from spark_retrieval.models.two_tower import DSSM, SimpleX

from horovod_available import requires_horovod


TINY = dict(epochs=2, embedding_dim=8, batch_size=32, verbose=False, num_proc=2)


@pytest.fixture(scope="module")
def split(spark):
    rng = np.random.default_rng(1)
    rows = [(u, int((u + t) % 30 if rng.random() < 0.6 else rng.integers(0, 30)), 4.0, t) for u in range(25) for t in range(12)]
    ratings = spark.createDataFrame(rows, "user_id long, item_id long, rating double, timestamp long")
    result = temporal_split(ratings)
    return result.train.cache(), result.test.cache()


def validated(train):
    """Validation queries from train: scored by rank 0 after each epoch, the best epoch sent to every rank."""
    return dict(validation_queries=validation_split(train).test, patience=1, learning_rate=0.05)


def assert_ranks_agree(model, test):
    training = model.metadata["training"]
    assert training["best_epoch"] == 1 + max(range(len(training["history"])), key=lambda e: training["history"][e]["validation"])
    hashes = model.metadata["training"]["parameter_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    assert model.metadata["training"]["num_proc"] == 2
    recommendations = model.recommend(test, 3).collect()
    assert {r[QUERY_ID] for r in recommendations} == {r[QUERY_ID] for r in test.collect()}
    assert all(len(r[RECOMMENDATIONS]) == 3 for r in recommendations)


@pytest.mark.slow
@requires_horovod
def test_horovod_two_ranks_end_with_identical_parameters(split):
    """The default backend, "auto", is Horovod when it is installed; the metadata records the one that ran."""
    train, test = split
    model = DSSM(**TINY, hidden_dims=[16, 8], start_timeout=120, **validated(train)).fit(train)
    assert_ranks_agree(model, test)
    assert model.metadata["training"]["backend"] == "horovod" and model.get("backend") == "auto"


@pytest.mark.slow
@requires_horovod
def test_one_process_on_a_local_master_trains_in_a_child_process_like_one_horovod_process(split):
    """auto + one process on local[2] is the ``process`` backend: a fresh process like Horovod's, the same weights."""
    train, test = split
    one_process = {key: value for key, value in TINY.items() if key != "num_proc"}
    child = DSSM(**one_process, hidden_dims=[16, 8]).fit(train)
    horovod = DSSM(**one_process, hidden_dims=[16, 8], backend="horovod", num_proc=1, start_timeout=120).fit(train)
    trained = child.metadata["training"]
    assert (trained["backend"], trained["num_proc"], child.get("backend")) == ("process", 1, "auto")
    assert horovod.metadata["training"]["backend"] == "horovod"
    assert trained["environment"]["torch_cpu_capability"] == horovod.metadata["training"]["environment"]["torch_cpu_capability"]
    assert trained["parameter_hashes"] == horovod.metadata["training"]["parameter_hashes"]
    assert len(child.recommend(test, 3).collect()) == test.count()


def test_child_process_launcher_runs_the_function_in_another_process_and_reports_its_death(spark):
    launcher = get_launcher("process", spark, 1)

    def pid_and_sum(a, b):
        import os

        return os.getpid(), a + b

    [(pid, total)] = launcher.run(pid_and_sum, 2, 3)
    assert pid != os.getpid() and total == 5

    def killed():
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(TrainingFailedError, match=r"rank 0\) ended with code -9: killed by signal 9") as raised:
        launcher.run(killed)
    assert (raised.value.rank, raised.value.exit_code) == (0, -9)
    with pytest.raises(TrainingFailedError, match="code 1: an exception in the training function"):
        launcher.run(lambda: 1 / 0)


def test_a_child_training_process_exits_when_its_driver_is_killed(tmp_path):
    pid_file = tmp_path / "child.pid"
    driver = (
        "import os, time\n"
        "from spark_retrieval.distributed.child_process import ChildProcessLauncher\n"
        "def train():\n"
        f"    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(120)\n"
        "ChildProcessLauncher().run(train)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", driver])
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(pid_file.read_text())
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


@pytest.mark.slow
def test_torch_distributor_two_processes_end_with_identical_parameters(split):
    train, test = split
    model = SimpleX(**TINY, backend="torch_distributor", num_negatives=4, **validated(train)).fit(train)
    assert_ranks_agree(model, test)


@pytest.mark.slow
def test_torch_distributor_returns_rank_0s_result_when_another_rank_ends_last(spark):
    # Local-mode TorchDistributor has every rank pickle its return value to one shared file, so on its own
    # it returns whichever rank ends last: here rank 1, which sleeps. The launcher must still give rank 0's.
    def result_of_rank():
        import os
        import time

        rank = int(os.environ["RANK"])
        if rank == 1:
            time.sleep(3)
        return {"rank": rank}

    assert TorchDistributorLauncher(num_proc=2, local_mode=True).run(result_of_rank) == [{"rank": 0}]


@pytest.mark.slow
def test_torch_distributor_names_the_rank_that_was_killed(spark):
    def killed_on_rank_1():
        import os
        import signal

        import torch
        import torch.distributed as dist

        dist.init_process_group("gloo")
        if dist.get_rank() == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        dist.all_reduce(torch.zeros(1))
        return "unreachable"

    with pytest.raises(TrainingFailedError, match="rank 1 .*SIGKILL") as raised:
        TorchDistributorLauncher(num_proc=2, local_mode=True).run(killed_on_rank_1)
    assert (raised.value.rank, raised.value.exit_code) == (1, -9)


def test_backend_failure_messages_become_training_failed_errors():
    horovod = first_failure(
        "Horovod detected that one or more processes exited with non-zero status, thus causing the job to be "
        "terminated. The first process to do so was:\nProcess name: 1\nExit code: 137\n"
    )
    assert (horovod.rank, horovod.exit_code) == (1, 137)
    assert "rank 1" in str(horovod) and "SIGKILL" in str(horovod)
    assert first_failure("Timed out waiting for Spark tasks to start") is None
    lost_task = first_failure("... The first process to do so was:\nProcess name: 0\nExit code: None\n")
    assert (lost_task.rank, lost_task.exit_code) == (0, None) and "Spark task running it was lost" in str(lost_task)

    torchrun_summary = (
        "Root Cause (first observed failure):\n[0]:\n  time      : 2026-11-29_14:04:38\n  host      : localhost\n"
        "  rank      : 1 (local_rank: 1)\n  exitcode  : 1 (pid: 30721)\n  error_file: <N/A>\n"
    )
    torch = root_cause("TorchDistributor failed during training.View stdout logs", torchrun_summary)
    assert (torch.rank, torch.exit_code) == (1, 1) and "exception in the training function" in str(torch)
    assert root_cause("some other error") is None

    assert describe_exit_code(-15) == "code -15: killed by signal 15 (SIGTERM)"
    assert describe_exit_code(137).startswith("code 137: killed by signal 9 (SIGKILL")


def test_default_num_proc_and_nics_follow_the_session(spark):
    assert local_cores(spark) == 2  # the fixture's local[2]
    assert default_num_proc(spark) == 1  # one process, both cores as its threads
    assert default_nics(spark) == ["lo"]


def test_launcher_arguments_are_checked(spark):
    with pytest.raises(InvalidParameterError, match="num_proc"):
        get_launcher("torch_distributor", spark, 0)
    with pytest.raises(InvalidParameterError, match="backend"):
        get_launcher("mpi", spark, 1)
    with pytest.raises(InvalidParameterError, match="one process"):
        get_launcher("local", spark, 2)
    with pytest.raises(InvalidParameterError, match="one process"):
        get_launcher("process", spark, 2)
    with pytest.raises(InvalidParameterError, match="task slot"):
        check_local_slots(spark, 3)


def test_watchdog_ends_a_process_that_makes_no_progress():
    script = (
        "import time\n"
        "from spark_retrieval.distributed.watchdog import Watchdog\n"
        "with Watchdog(1.0, label='test') as watchdog:\n"
        "    for _ in range(8):\n"
        "        time.sleep(0.25)\n"
        "        watchdog.beat()\n"  # 2 s of steady progress: no exit
        "    print('progressed', flush=True)\n"
        "    time.sleep(60)\n"  # then a wait that never ends
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 124 and "progressed" in done.stdout
    assert "no progress for" in done.stderr and "failure_timeout=1s" in done.stderr
    assert time.monotonic() - started < 60
    assert describe_exit_code(124).startswith("code 124: its watchdog saw no progress")
