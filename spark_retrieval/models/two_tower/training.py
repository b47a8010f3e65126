"""The per-rank training loop, the same for every backend: ``train_on_rank(job)``.

Each rank builds the network from the job's spec, joins the backend's process group, resumes from the
checkpoint when there is one for this configuration, streams its share of the example files every
epoch and steps the optimizer on gradients averaged over ranks. Rank 0 reports loss and samples/s to
stderr and writes a checkpoint after each epoch; at the end it writes the weights as a parquet file under
the job's ``state_dir`` (``checkpoint.write_state``) and returns where, not the weights.

Everything random is a function of the seed: the initial weights (rank 0's, broadcast), each epoch's
example order (``seed, epoch``) and in-window shuffle (``seed, epoch, rank``), and dropout (torch's
generator, seeded once; its per-rank state is saved in every checkpoint and restored on resume). So a
resumed run continues exactly where the interrupted one stopped.

What else the weights depend on, and how it is taken out of them:
- **The CPU's instruction set.** torch picks its vectorised kernels by the CPU (AVX-512 where there is one,
  else AVX2) and their float results differ in the last bits, which training amplifies into other weights
  (measured: the ``dssm_softmax`` benchmark row on ml-latest-small gave Recall@20 0.1378 with AVX-512
  kernels and 0.1241 with AVX2 ones, on one machine). Each training process therefore runs torch with
  ``ATEN_CPU_CAPABILITY=avx2`` (the common x86-64 level) unless that variable is set already, so a fit
  gives the same weights on AVX2 and AVX-512 CPUs. The ``local`` backend trains in the driver, whose
  kernels may already be chosen: it is not pinned there (set the variable before the driver's first
  torch operation to pin it).
- **Threads.** With more than one intra-op thread, torch's CPU ``index_put_(accumulate=True)`` (the
  backward of gathering item vectors) adds with atomics in whatever order the threads arrive, so two runs
  differed; training runs with ``torch.use_deterministic_algorithms(True)``, so two runs on the same number
  of threads give the same weights (the sampled-negative losses add each item's gradients in row order
  without a sort: the same bits, faster). The number of threads still counts where MKL splits a matrix
  product's inner dimension among its threads: a weight's gradient summed over the ~8,800 distinct items
  of a 100-negative DSSM batch differs in its last bits between 1 and 2 threads, while the tests' small
  SimpleX gets the same weights on both. It is recorded (``torch_threads``).
Every rank records what it ran with (``environment``: torch's CPU capability, threads, versions, CPU
model), kept in the model's metadata and the benchmark's ``results.json``.

Test-only fault injection: ``SPARK_RETRIEVAL_TEST_KILL_AT=rank:epoch:step`` (epoch and step 1-based)
makes that training process SIGKILL itself just before that optimizer step, after writing the time to
the file named by ``SPARK_RETRIEVAL_TEST_KILL_MARKER`` when set. Ignored by the ``local`` backend,
whose training process is the driver.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ...data.sampling import NEGATIVE_ITEMS
from ...distributed.processes import DEFAULT_FAILURE_TIMEOUT
from .checkpoint import checkpoint_record, load_checkpoint, parameter_hash, save_checkpoint, state_to_bytes, write_state
from .epoch_validation import ValidationSet
from .losses import PER_BATCH, PER_EXAMPLE, BatchNegativeSampler, TrainingObjective, item_feature_columns
from ...host import cpu_features, cpu_model
from .network import build_network, pin_cpu_capability
from .shards import open_filesystem, rank_share, shuffled_batches, steps_per_epoch
from .training_data import LOG_Q, POSITIVE_ITEM, SAMPLING_WEIGHT

THREADS_VARIABLE = "SPARK_RETRIEVAL_TORCH_THREADS"
# glibc's mallopt options and the values a training process sets (see keep_freed_memory).
MALLOC_TRIM_THRESHOLD, MALLOC_MMAP_THRESHOLD = -1, -3
KEPT_TOP_BYTES = 2**31 - 1  # mallopt takes a C int
LARGEST_HEAP_BLOCK_BYTES = 32 * 1024 * 1024  # the largest mmap threshold glibc accepts on 64-bit
# A rank whose collective failed because a peer died waits this long before exiting, so that the launcher,
# which names the first process to exit, names the dead one rather than this survivor.
LOST_PEER_EXIT_DELAY_SECONDS = 3.0
KILL_VARIABLE = "SPARK_RETRIEVAL_TEST_KILL_AT"
KILL_MARKER_VARIABLE = "SPARK_RETRIEVAL_TEST_KILL_MARKER"


@dataclass
class TrainingJob:
    """Everything a rank needs, picklable: sent to every process by the launcher."""

    network: dict[str, Any]
    loss: str
    example_files: list[tuple[str, int]]
    items_path: str
    batch_size: int
    epochs: int
    learning_rate: float
    weight_decay: float
    seed: int
    fingerprint: str
    backend: str
    temperature: float = 1.0
    margin: float = 0.0
    negative_weight: float = 1.0
    negative_sampling: str = PER_EXAMPLE
    num_negatives: int | None = None
    shuffle_buffer: int = 65536
    checkpoint_dir: str | None = None
    state_dir: str | None = None  # where rank 0 writes the trained weights (None: nowhere, e.g. a benchmark)
    nics: Sequence[str] | None = None
    failure_timeout: int = DEFAULT_FAILURE_TIMEOUT
    verbose: bool = True
    label: str = "two-tower"
    validation_path: str | None = None
    validation_metric: str = "ndcg"
    validation_k: int = 20
    patience: int = 3


@dataclass
class RankResult:
    rank: int
    parameter_hash: str
    parameter_hashes: list[str] = field(default_factory=list)
    state_path: str | None = None  # rank 0: the directory holding the trained weights' parquet file
    history: list[dict[str, float]] = field(default_factory=list)
    start_epoch: int = 0
    environment: dict[str, Any] = field(default_factory=dict)
    best_epoch: int | None = None


def train_on_rank(job: TrainingJob) -> RankResult:
    from ...distributed import LOCAL, init_collective
    from ...distributed.watchdog import Watchdog

    if job.backend != LOCAL:  # a training process of its own: pinned before it runs any torch operation
        pin_cpu_capability()
        keep_freed_memory()
    collective = init_collective(job.backend, job.nics, job.failure_timeout)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        if collective.size == 1:
            return _train(job, collective, lambda: None)
        # No progress for failure_timeout seconds (ranks waiting on each other for ever): end this process.
        with Watchdog(job.failure_timeout, label=f"{job.label} rank {collective.rank}") as watchdog:
            return _train(job, collective, watchdog.beat)
    except Exception as error:
        if collective.lost_peer(error):
            print(
                f"[{job.label}] rank {collective.rank}: a collective failed, most likely because another "
                f"training process died ({error})",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(LOST_PEER_EXIT_DELAY_SECONDS)
        raise
    finally:
        torch.use_deterministic_algorithms(deterministic)
        collective.close()


def training_environment(processes_on_host: int) -> dict[str, Any]:
    """What a fit's weights depend on besides its data and parameters: compare two fits knowing these."""
    return {
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "processes_on_host": processes_on_host,
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "versions": {
            name: getattr(sys.modules.get(name), "__version__", None) for name in ("torch", "numpy", "pyarrow", "horovod")
        },
    }


def _train(job: TrainingJob, collective, beat) -> RankResult:
    torch.manual_seed(job.seed)
    torch.set_num_threads(threads_per_process(collective.local_size))
    network = build_network(job.network)
    item_features, log_q = load_item_table(job.items_path, item_feature_columns(network))
    objective = TrainingObjective(
        network, job.loss, item_features, log_q, job.temperature, job.margin, job.negative_weight, job.negative_sampling
    )
    sampler = None
    if job.negative_sampling == PER_BATCH:
        sampler = BatchNegativeSampler(load_sampling_weights(job.items_path, len(log_q)), job.num_negatives)
    optimizer = torch.optim.Adam(network.parameters(), lr=job.learning_rate, weight_decay=job.weight_decay)
    step, optimizer = collective.prepare(objective, optimizer)

    checkpoint = collective.broadcast_object(
        load_checkpoint(job.checkpoint_dir, job.fingerprint, job.epochs) if collective.rank == 0 else None
    )
    start_epoch, history = 0, []
    best = BestEpoch()
    if checkpoint is not None:
        network.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        rng_states = checkpoint["torch_rng"]
        if len(rng_states) == collective.size:
            torch.set_rng_state(rng_states[collective.rank])
        else:  # resumed on another number of processes: still seeded, no longer the uninterrupted run's stream
            torch.manual_seed(job.seed * 1_000_003 + checkpoint["epochs_done"] * 1009 + collective.rank)
        start_epoch, history = checkpoint["epochs_done"], list(checkpoint["history"])
        best = BestEpoch.from_record(checkpoint.get("best"), keep_state=collective.rank == 0)
        del checkpoint
        _report(job, collective, f"resuming after epoch {start_epoch}/{job.epochs} (its checkpoint)")

    validation = None
    if job.validation_path and collective.rank == 0:
        validation = ValidationSet.load(job.validation_path, objective.user_columns)
    columns = objective.batch_columns()
    rank_batch = rank_batch_size(job.batch_size, collective.size)
    steps = steps_per_epoch(job.example_files, collective.size, rank_batch)
    beat()
    for epoch in range(start_epoch, job.epochs):
        if best.stopped:
            break
        record = _run_epoch(job, collective, objective, step, optimizer, columns, rank_batch, steps, epoch, beat, sampler)
        validated = ""
        if job.validation_path:
            started = time.perf_counter()
            score = validation.score(network, objective.item_features, job.validation_metric, job.validation_k) if validation else None
            record["validation"] = score = collective.broadcast_object(score)
            record["validation_seconds"] = time.perf_counter() - started
            best.update(epoch + 1, score, network if collective.rank == 0 else None, job.patience)
            validated = (
                f", validation {job.validation_metric}@{job.validation_k} {score:.4f} "
                f"(best {best.score:.4f}, epoch {best.epoch})"
            )
            beat()
        history.append(record)
        run_here = history[len(history) - (epoch + 1 - start_epoch):]  # this run's epochs (not the resumed ones)
        remaining = job.epochs - epoch - 1
        eta = f", ETA {remaining * sum(r['seconds'] for r in run_here) / len(run_here):.0f}s" if remaining and not best.stopped else ""
        _report(
            job,
            collective,
            f"epoch {epoch + 1}/{job.epochs}: loss {record['loss']:.5f}, "
            f"{record['samples_per_second']:,.0f} samples/s ({record['seconds']:.1f}s, {collective.size} proc{eta})"
            + validated,
        )
        if best.stopped:
            _report(job, collective, f"stopping early: no better validation score in {job.patience} epoch(s); keeping epoch {best.epoch}")
        if job.checkpoint_dir:
            rng_states = collective.allgather_object(torch.get_rng_state())  # every rank's dropout stream
            if collective.rank == 0:
                saved = checkpoint_record(
                    job.fingerprint, epoch + 1, network.state_dict(), optimizer.state_dict(), history, rng_states,
                    best=best.record() if job.validation_path else None,
                )
                save_checkpoint(job.checkpoint_dir, saved)
        beat()

    if job.validation_path and 0 < best.epoch != len(history):  # every rank ends on the best epoch's weights
        network.load_state_dict(collective.broadcast_object(best.state if collective.rank == 0 else None))

    own_hash = parameter_hash(network)
    hashes = collective.allgather_object(own_hash)
    is_root = collective.rank == 0
    return RankResult(
        rank=collective.rank,
        parameter_hash=own_hash,
        parameter_hashes=hashes,
        state_path=write_state(job.state_dir, state_to_bytes(network.state_dict())) if is_root and job.state_dir else None,
        history=history if is_root else [],
        start_epoch=start_epoch,
        environment=training_environment(collective.local_size),
        best_epoch=(best.epoch or len(history)) if job.validation_path else None,  # 0: no finite score at all
    )


class BestEpoch:
    """The best validation score so far, its epoch and (rank 0) its weights; ``stopped`` once ``patience``
    epochs have passed without a better one."""

    def __init__(self, epoch: int = 0, score: float = -math.inf, state: dict | None = None, stopped: bool = False):
        self.epoch, self.score, self.state, self.stopped = epoch, score, state, stopped

    def update(self, epoch: int, score: float, network, patience: int) -> None:
        if math.isfinite(score) and score > self.score:
            self.epoch, self.score = epoch, score
            if network is not None:
                self.state = {name: value.detach().clone() for name, value in network.state_dict().items()}
        self.stopped = epoch - self.epoch >= patience

    def record(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "score": self.score, "model": self.state, "stopped": self.stopped}

    @classmethod
    def from_record(cls, record: dict[str, Any] | None, keep_state: bool) -> "BestEpoch":
        if not record:
            return cls()
        return cls(record["epoch"], record["score"], record["model"] if keep_state else None, record["stopped"])


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the blocks a training step frees, up to 32 MiB each, for the next step.

    By default glibc gives blocks of over 128 KiB back to the kernel when they are freed (it raises that limit
    as it sees larger ones, to 32 MiB at most), and trims the free top of its heap. A step's temporaries then
    come back as fresh pages that the kernel zeroes one page fault at a time, every step (a 100-negative DSSM
    batch's gathered item vectors alone are 26 MB). Kept in the heap, the blocks are reused: no faults, the
    same arithmetic (BENCHMARKS.md has the epochs before and after). The process's resident memory stays at
    its peak between steps instead of dropping. Returns False where the C library has no ``mallopt`` (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(MALLOC_TRIM_THRESHOLD, KEPT_TOP_BYTES)) and bool(
        mallopt(MALLOC_MMAP_THRESHOLD, LARGEST_HEAP_BLOCK_BYTES)
    )


def threads_per_process(processes_on_host: int) -> int:
    """``SPARK_RETRIEVAL_TORCH_THREADS`` when set, else the host's cores shared among its training processes."""
    configured = int(os.environ.get(THREADS_VARIABLE, "0") or 0)
    return configured if configured > 0 else max(1, (os.cpu_count() or 1) // max(1, processes_on_host))


def rank_batch_size(batch_size: int, size: int) -> int:
    """``batch_size`` is per optimizer step over all processes, so results barely depend on their number."""
    return max(1, math.ceil(batch_size / size))


def _run_epoch(
    job, collective, objective, step, optimizer, columns, batch_size, steps, epoch, beat, sampler=None
) -> dict[str, float]:
    objective.train()
    started = time.perf_counter()
    rng = np.random.default_rng([job.seed, epoch, collective.rank])
    share = rank_share(job.example_files, collective.rank, collective.size, job.seed, epoch)
    kill_step = _kill_step(job, collective.rank, epoch)
    shared_negatives = sampler.epoch(job.seed, epoch, collective.rank) if sampler is not None else None
    loss_sum, samples = 0.0, 0
    for index, batch in enumerate(shuffled_batches(share, columns, batch_size, steps, job.shuffle_buffer, rng)):
        if index == kill_step:
            _kill_self()
        tensors = {name: torch.from_numpy(values.astype(np.int64, copy=False)) for name, values in batch.items()}
        if shared_negatives is not None:
            tensors[NEGATIVE_ITEMS] = next(shared_negatives)
        optimizer.zero_grad()
        loss = step(tensors)
        loss.backward()
        optimizer.step()
        beat()
        size = len(tensors[columns[0]])
        loss_sum += float(loss.detach()) * size
        samples += size
    seconds = time.perf_counter() - started
    total_samples = collective.sum(samples)
    total_loss = collective.sum(loss_sum)
    return {
        "epoch": epoch + 1,
        "loss": total_loss / max(total_samples, 1),
        "samples": int(total_samples),
        "seconds": seconds,
        "samples_per_second": total_samples / seconds if seconds > 0 else 0.0,
    }


def _kill_step(job: TrainingJob, rank: int, epoch: int) -> int | None:
    """The 0-based step of this epoch at which the test hook kills this process, or None."""
    spec = os.environ.get(KILL_VARIABLE)
    if not spec or job.backend == "local":
        return None
    kill_rank, kill_epoch, kill_step = (int(part) for part in spec.split(":"))
    return kill_step - 1 if (kill_rank, kill_epoch) == (rank, epoch + 1) else None


def _kill_self() -> None:
    marker = os.environ.get(KILL_MARKER_VARIABLE)
    if marker:
        with open(marker, "w") as stream:
            stream.write(repr(time.time()))
    print(f"[two-tower] test hook {KILL_VARIABLE}: killing process {os.getpid()}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _report(job: TrainingJob, collective, message: str) -> None:
    if job.verbose and collective.rank == 0:
        print(f"[{job.label}] {message}", file=sys.stderr, flush=True)


def load_item_table(path: str, columns: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Item-tower inputs indexed by item index (row 0 = unknown), and log q per item index."""
    fs, root = open_filesystem(path)
    table = pq.read_table(root, filesystem=fs)
    index = table.column(POSITIVE_ITEM).to_numpy()
    size = int(index.max()) + 1 if len(index) else 1
    features = {}
    for column in columns:
        values = table.column(column).combine_chunks()
        if pa.types.is_list(values.type):
            flat = values.flatten().to_numpy()
            width = len(flat) // max(len(values), 1)
            dense = np.zeros((size, width), dtype=np.int64)
            dense[index] = flat.reshape(len(values), width)
        else:
            dense = np.zeros(size, dtype=np.int64)
            dense[index] = values.to_numpy()
        features[column] = torch.from_numpy(dense)
    log_q = np.zeros(size, dtype=np.float32)
    log_q[index] = table.column(LOG_Q).to_numpy()
    return features, torch.from_numpy(log_q)


def load_sampling_weights(path: str, size: int) -> np.ndarray:
    """Each item index's ``SAMPLING_WEIGHT`` (0 for the unknown row)."""
    fs, root = open_filesystem(path)
    table = pq.read_table(root, columns=[POSITIVE_ITEM, SAMPLING_WEIGHT], filesystem=fs)
    weights = np.zeros(size, dtype=np.float64)
    weights[table.column(POSITIVE_ITEM).to_numpy()] = table.column(SAMPLING_WEIGHT).to_numpy()
    return weights
