"""A Horovod rank (or the one child process) killed mid-training: ``fit`` fails fast with one clear error, and
a rerun resumes.

Two processes (Horovod over Gloo, local[2]) train SimpleX (dropout on, so the resumed run also needs every
rank's random generator back) for three epochs with a checkpoint after each. The test hook in
``training.py`` makes rank 1 SIGKILL itself at the second step of epoch 2. Then:

* ``fit`` raises ``TrainingFailedError`` naming rank 1, its exit code and epoch 2, within
  ``FAILURE_TIMEOUT`` seconds of the kill (measured: a few seconds, since the dead process's connections
  close at once; the timeout is the bound for a peer that hangs instead of dying);
* a second ``fit`` with the same ``checkpoint_dir`` resumes after epoch 1 and ends with exactly the
  weights — hence the same Recall@k — of an uninterrupted run: on 2 processes training is bit-for-bit
  deterministic (see test_two_tower_determinism.py), and a checkpoint carries everything the next epoch
  reads (weights, Adam state, every rank's generator; the data order is a function of seed and epoch).
"""

import dataclasses
import time

import numpy as np
import pytest

from spark_retrieval.data.split import temporal_split
from spark_retrieval.errors import TrainingFailedError
from spark_retrieval.evaluation import evaluate
from spark_retrieval.models.two_tower import SimpleX
from spark_retrieval.models.two_tower import checkpoint as checkpoint_module
from spark_retrieval.models.two_tower.estimator import _with_progress
from spark_retrieval.models.two_tower.training import KILL_MARKER_VARIABLE, KILL_VARIABLE, TrainingJob

from horovod_available import requires_horovod


SCHEMA = "user_id long, item_id long, rating double, timestamp long"
FAILURE_TIMEOUT = 60
EPOCHS = 3


def simplex(checkpoint_dir):
    return SimpleX(
        epochs=EPOCHS, embedding_dim=8, batch_size=32, num_negatives=4, dropout=0.1, seed=5, verbose=False,
        backend="horovod", num_proc=2, start_timeout=300, failure_timeout=FAILURE_TIMEOUT,
        checkpoint_dir=str(checkpoint_dir),
    )


@pytest.fixture(scope="module")
def split(spark):
    rng = np.random.default_rng(2)
    rows = [
        (u, int((u + t) % 40 if rng.random() < 0.6 else rng.integers(0, 40)), 4.0, t)
        for u in range(30)
        for t in range(14)
    ]
    result = temporal_split(spark.createDataFrame(rows, SCHEMA))
    return result.train.cache(), result.test.cache()


@pytest.mark.slow
@requires_horovod
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # horovod's cancelled Spark job
def test_killed_rank_fails_fast_and_a_rerun_resumes_to_the_same_model(split, tmp_path, monkeypatch):
    train, test = split
    checkpoints, marker = tmp_path / "checkpoints", tmp_path / "killed_at"
    monkeypatch.setenv(KILL_VARIABLE, "1:2:2")  # rank 1, epoch 2, step 2
    monkeypatch.setenv(KILL_MARKER_VARIABLE, str(marker))
    with pytest.raises(TrainingFailedError) as raised:
        simplex(checkpoints).fit(train)
    seconds_to_fail = time.time() - float(marker.read_text())
    failure = raised.value
    print(f"[resume-test] fit failed {seconds_to_fail:.1f}s after the kill")
    assert seconds_to_fail < FAILURE_TIMEOUT, f"fit took {seconds_to_fail:.0f}s to fail after the kill"
    assert failure.rank == 1 and failure.epoch == 2 and failure.exit_code in (137, -9)  # SIGKILL
    assert failure.checkpoint == f"{checkpoints}/checkpoint.pt"
    message = str(failure)
    for expected in ("during epoch 2/3", "rank 1", "SIGKILL", "resume from epoch 2", str(checkpoints)):
        assert expected in message, message
    assert checkpoint_module.read_checkpoint(str(checkpoints))["epochs_done"] == 1

    monkeypatch.delenv(KILL_VARIABLE)
    resumed = simplex(checkpoints).fit(train)
    uninterrupted = simplex(tmp_path / "uninterrupted").fit(train)

    assert resumed.metadata["training"]["resumed_from_epoch"] == 1
    assert uninterrupted.metadata["training"]["resumed_from_epoch"] is None
    assert [h["epoch"] for h in resumed.training_history] == [1, 2, 3]
    hashes = resumed.metadata["training"]["parameter_hashes"]
    assert hashes == uninterrupted.metadata["training"]["parameter_hashes"] and hashes[0] == hashes[1]
    assert [h["loss"] for h in resumed.training_history] == [h["loss"] for h in uninterrupted.training_history]
    recall = [evaluate(m.recommend(test, 10), test, k=10)["recall"] for m in (resumed, uninterrupted)]
    assert recall[0] == recall[1]
    assert checkpoint_module.read_checkpoint(str(checkpoints))["epochs_done"] == EPOCHS


@pytest.mark.slow
def test_a_killed_child_process_fails_the_fit_and_a_rerun_resumes_to_the_same_model(split, tmp_path, monkeypatch):
    """The same on one process that the driver started itself (``backend="process"``, the local default)."""
    train, _ = split
    settings = dict(epochs=EPOCHS, embedding_dim=8, batch_size=32, num_negatives=4, dropout=0.1, seed=5, verbose=False)
    checkpoints = tmp_path / "checkpoints"
    monkeypatch.setenv(KILL_VARIABLE, "0:2:2")
    with pytest.raises(TrainingFailedError) as raised:
        SimpleX(**settings, checkpoint_dir=str(checkpoints)).fit(train)
    failure = raised.value
    assert (failure.rank, failure.epoch, failure.exit_code) == (0, 2, -9)
    assert "the training process (rank 0) ended with code -9: killed by signal 9" in str(failure)
    assert "resume from epoch 2" in str(failure) and failure.checkpoint == f"{checkpoints}/checkpoint.pt"

    monkeypatch.delenv(KILL_VARIABLE)
    resumed = SimpleX(**settings, checkpoint_dir=str(checkpoints)).fit(train)
    uninterrupted = SimpleX(**settings).fit(train)
    assert resumed.metadata["training"]["backend"] == "process" and resumed.metadata["training"]["resumed_from_epoch"] == 1
    assert resumed.metadata["training"]["parameter_hashes"] == uninterrupted.metadata["training"]["parameter_hashes"]


def job(checkpoint_dir, epochs=4):
    return TrainingJob(
        network={}, loss="ccl", example_files=[], items_path="", batch_size=2, epochs=epochs, learning_rate=0.1,
        weight_decay=0.0, seed=0, fingerprint="f", backend="horovod", checkpoint_dir=checkpoint_dir, label="simplex",
    )


def test_failure_message_names_the_epoch_and_the_checkpoint_to_resume_from(tmp_path):
    backend_error = TrainingFailedError("Horovod training failed: the process of rank 1 was the first to exit (…)",
                                        rank=1, exit_code=137)
    directory = str(tmp_path / "checkpoints")

    nothing = _with_progress(backend_error, job(None))
    assert (nothing.rank, nothing.exit_code, nothing.epoch, nothing.checkpoint) == (1, 137, None, None)
    assert "simplex training failed during training: Horovod" in str(nothing)
    assert "no checkpoint_dir (or working_dir) was set" in str(nothing).lower()

    first_epoch = _with_progress(backend_error, job(directory))
    assert (first_epoch.epoch, first_epoch.checkpoint) == (1, None)
    assert "during epoch 1/4" in str(first_epoch) and "no epoch had completed" in str(first_epoch).lower()

    checkpoint_module.save_checkpoint(directory, checkpoint_module.checkpoint_record("f", 2, {}, {}, [], []))
    after_two = _with_progress(backend_error, job(directory))
    assert (after_two.epoch, after_two.checkpoint) == (3, f"{directory}/checkpoint.pt")
    assert "during epoch 3/4" in str(after_two) and "resume from epoch 3" in str(after_two)

    foreign = _with_progress(backend_error, dataclasses.replace(job(directory), fingerprint="g"))
    assert foreign.epoch == 1 and foreign.checkpoint is None

    all_done = _with_progress(backend_error, job(directory, epochs=2))
    assert all_done.epoch is None and "after its last epoch (2)" in str(all_done)
