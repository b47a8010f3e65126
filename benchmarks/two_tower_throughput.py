"""Two-tower training throughput (samples/s): one model, one batch size, several ways of running it.

    .venv/bin/python benchmarks/two_tower_throughput.py [--examples 200000] [--batch-size 512] ...

Rows, printed side by side:
  torch loop        a plain single-process loop over in-memory batches (no data pipeline at all)
  local             the library's training function in the driver, streaming the parquet examples
  horovod x1 / x2   the same function under horovod.spark.run with 1 and 2 ranks (Gloo)
  torch_dist x2     the same function under TorchDistributor, DDP over Gloo, 2 processes
Each run trains ``--epochs`` epochs on synthetic DSSM examples (random ids, ``--num-negatives``
sampled negatives each); the reported rate is the last epoch's, so start-up is not counted.
The processes of a run share the machine's cores (threads per process = cores / processes, or
``SPARK_RETRIEVAL_TORCH_THREADS``; on a busy machine 1 thread each gives steadier numbers).
The last line is the ratio of the best distributed rate to the plain loop's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from spark_retrieval.models.two_tower.network import build_network, network_spec
from spark_retrieval.data.sampling import NEGATIVE_ITEMS
from spark_retrieval.models.two_tower.losses import TrainingObjective
from spark_retrieval.models.two_tower.schema import load_schema
from spark_retrieval.models.two_tower.shards import list_parquet_files
from spark_retrieval.models.two_tower.training_data import LOG_Q, POSITIVE_ITEM
from spark_retrieval.models.two_tower.training import TrainingJob, load_item_table, threads_per_process, train_on_rank

USERS, ITEMS, HISTORY = 10_000, 5_000, 10


def synthetic_examples(directory: str, examples: int, num_negatives: int, files: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    os.makedirs(f"{directory}/examples")
    per_file = examples // files
    for part in range(files):
        columns = {
            "user__user_id": rng.integers(1, USERS + 1, per_file, dtype=np.int32),
            "user__last_item": rng.integers(1, ITEMS + 1, per_file, dtype=np.int32),
            "user__recent_items": rng.integers(0, ITEMS + 1, (per_file, HISTORY), dtype=np.int32),
            POSITIVE_ITEM: rng.integers(1, ITEMS + 1, per_file, dtype=np.int32),
            NEGATIVE_ITEMS: rng.integers(1, ITEMS + 1, (per_file, num_negatives), dtype=np.int32),
        }
        table = pa.table({name: fixed_width(values) if values.ndim == 2 else values for name, values in columns.items()})
        pq.write_table(table, f"{directory}/examples/part-{part:05d}.parquet")
    index = np.arange(1, ITEMS + 1, dtype=np.int32)
    pq.write_table(
        pa.table({POSITIVE_ITEM: index, LOG_Q: np.full(ITEMS, -np.log(ITEMS), dtype=np.float32)}),
        f"{directory}/items.parquet",
    )


def fixed_width(matrix: np.ndarray) -> pa.Array:
    offsets = pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel()))


def dssm_spec(hidden_dims: list[int], embedding_dim: int) -> dict:
    schema = load_schema("dssm_movielens").with_embedding_dim(embedding_dim).resolve(["user_id", "item_id", "timestamp"])
    return network_spec("dssm", schema, {"user": USERS, "item": ITEMS}, hidden_dims=hidden_dims, normalize=True, dropout=0.0)


def plain_torch_loop(job: TrainingJob) -> float:
    """The same objective and optimizer stepped over in-memory batches: the ceiling without any pipeline."""
    torch.set_num_threads(threads_per_process(1))
    torch.manual_seed(job.seed)
    network = build_network(job.network)
    item_features, log_q = load_item_table(job.items_path, [POSITIVE_ITEM])
    objective = TrainingObjective(network, job.loss, item_features, log_q, job.temperature)
    optimizer = torch.optim.Adam(network.parameters(), lr=job.learning_rate)
    table = pq.read_table(os.path.dirname(job.example_files[0][0]))
    arrays = {}
    for name in objective.batch_columns():
        column = table.column(name).combine_chunks()
        arrays[name] = torch.from_numpy(
            column.flatten().to_numpy().reshape(len(column), -1) if pa.types.is_list(column.type) else column.to_numpy()
        ).long()
    rows = len(table)
    rate = 0.0
    for _ in range(job.epochs):
        started = time.perf_counter()
        for start in range(0, rows - job.batch_size + 1, job.batch_size):
            batch = {name: values[start : start + job.batch_size] for name, values in arrays.items()}
            optimizer.zero_grad()
            objective(batch).backward()
            optimizer.step()
        rate = (rows // job.batch_size) * job.batch_size / (time.perf_counter() - started)
    return rate


def distributed_rate(job: TrainingJob, backend: str, num_proc: int) -> float:
    from spark_retrieval.distributed import get_launcher
    from spark_retrieval.session import get_spark

    spark = get_spark()
    job = dataclasses.replace(job, backend=backend)
    launcher = get_launcher(backend, spark, num_proc, nics=["lo"], start_timeout=300)
    results = launcher.run(train_on_rank, job)
    root = next(r for r in results if r.rank == 0)
    return root.history[-1]["samples_per_second"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--num-negatives", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden-dims", default="512,256,128")
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--runs", default="torch_loop,local,horovod1,horovod2,torch_distributor2")
    args = parser.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    with tempfile.TemporaryDirectory(prefix="two-tower-throughput-") as directory:
        synthetic_examples(directory, args.examples, args.num_negatives, files=8, seed=0)
        job = TrainingJob(
            network=dssm_spec([int(d) for d in args.hidden_dims.split(",")], args.embedding_dim),
            loss="bce",
            example_files=list_parquet_files(f"{directory}/examples"),
            items_path=f"{directory}/items.parquet",
            batch_size=args.batch_size,
            epochs=args.epochs,
            learning_rate=1e-3,
            weight_decay=0.0,
            seed=0,
            fingerprint="throughput",
            backend="local",
            temperature=0.05,
            verbose=False,
        )
        runs = {
            "torch_loop": ("torch loop", lambda: plain_torch_loop(job)),
            "local": ("local", lambda: distributed_rate(job, "local", 1)),
            "horovod1": ("horovod x1", lambda: distributed_rate(job, "horovod", 1)),
            "horovod2": ("horovod x2", lambda: distributed_rate(job, "horovod", 2)),
            "torch_distributor2": ("torch_dist x2", lambda: distributed_rate(job, "torch_distributor", 2)),
        }
        rates: dict[str, float] = {}
        for name in args.runs.split(","):
            label, measure = runs[name]
            print(f"measuring {label} ...", file=sys.stderr, flush=True)
            rates[label] = measure()

    print(
        f"DSSM bce, {args.num_negatives} negatives, batch {args.batch_size}, hidden {args.hidden_dims}, "
        f"embedding {args.embedding_dim}, {args.examples:,} examples, {os.cpu_count()} cores"
    )
    print("  ".join(f"{label:>14}" for label in rates))
    print("  ".join(f"{rate:>14,.0f}" for rate in rates.values()))
    baseline = rates.get("torch loop")
    distributed = [rate for label, rate in rates.items() if label not in ("torch loop", "local")]
    if baseline and distributed:
        print(f"best distributed / plain torch loop: {max(distributed) / baseline:.2f}x")


if __name__ == "__main__":
    main()
