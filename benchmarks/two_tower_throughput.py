"""Two-tower training throughput per process, per loss: the library's training loop against a plain PyTorch loop.

    .venv/bin/python benchmarks/two_tower_throughput.py --runs 3 [--examples 100000] [--losses bce,sampled_softmax,ccl]

For every loss, on the same synthetic examples, the same network, the same torch threads (the machine's
cores, as a single training process on this host gets them) and the same CPU kernels (this script pins
``ATEN_CPU_CAPABILITY=avx2`` before torch runs anything, as every training process does; left unpinned, the
two in-process columns would run AVX-512 kernels on an AVX-512 CPU and the Horovod column AVX2 ones), each
run measures samples/s of:

  plain loop   the objective and Adam stepped over batches already in memory as tensors: no files, no
               shuffling, no collectives, torch's default (non-deterministic) kernels. The ceiling.
  library      ``training.train_on_rank`` with ``backend="local"`` in this process: the example files streamed
               from parquet in shuffled windows, deterministic kernels, the per-step bookkeeping.
  horovod x1   the same function as one Horovod process started by ``horovod.spark.run`` (Gloo): the path
               ``fit`` takes, with its collectives (one rank: they are local copies).

Each rate is the last of ``--epochs`` epochs (start-up not counted). Losses and networks: ``bce`` = DSSM with
10 sampled negatives, ``sampled_softmax`` = DSSM with in-batch negatives, ``ccl`` = SimpleX with 100 negatives;
DSSM layers 512-256-128, embeddings 64, batch 512. The last line is the smallest library / plain ratio over
the losses (median of the runs), the requirement being ≥ 0.8 for every loss.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import _harness
from spark_retrieval.data.sampling import NEGATIVE_ITEMS
from spark_retrieval.models.two_tower.losses import TrainingObjective
from spark_retrieval.models.two_tower.network import build_network, network_spec, pin_cpu_capability
from spark_retrieval.models.two_tower.schema import encoded_column, load_schema
from spark_retrieval.models.two_tower.shards import list_parquet_files
from spark_retrieval.models.two_tower.training import TrainingJob, load_item_table, threads_per_process, train_on_rank
from spark_retrieval.models.two_tower.training_data import LOG_Q, POSITIVE_ITEM

USERS, ITEMS = 10_000, 5_000
LOSSES = {
    # loss: (family, schema, negatives, network options, objective options)
    "bce": ("dssm", "dssm_movielens", 10, {"hidden_dims": [512, 256, 128], "normalize": True}, {"temperature": 0.05}),
    "sampled_softmax": ("dssm", "dssm_movielens", None, {"hidden_dims": [512, 256, 128], "normalize": True}, {"temperature": 0.05}),
    "ccl": ("simplex", "simplex_movielens", 100, {"gate": 0.5, "dropout": 0.1}, {"margin": 0.9, "negative_weight": 10.0}),
}


def network_for(loss: str, embedding_dim: int) -> dict:
    family, schema_name, _, options, _ = LOSSES[loss]
    schema = load_schema(schema_name).with_embedding_dim(embedding_dim).resolve(["user_id", "item_id", "timestamp"])
    sizes = {name: USERS if name == "user" else ITEMS for name in schema.used_vocabularies()}
    return network_spec(family, schema, sizes, **options)


def write_examples(directory: str, spec: dict, examples: int, negatives: int | None, files: int, seed: int) -> None:
    """Random encoded examples for ``spec``'s user tower (ids in range), one positive item each and
    ``negatives`` sampled items; plus the item table (item index, log q)."""
    from spark_retrieval.models.two_tower.schema import FeatureSchema

    schema = FeatureSchema.from_dict(spec["schema"])
    rng = np.random.default_rng(seed)
    os.makedirs(f"{directory}/examples")
    per_file = examples // files
    for part in range(files):
        columns = {}
        for feature in schema.user:
            high = USERS if feature.vocabulary == "user" else ITEMS
            shape = (per_file, feature.max_length) if feature.is_list else per_file
            columns[encoded_column(feature)] = rng.integers(1, high + 1, shape, dtype=np.int32)
        columns[POSITIVE_ITEM] = rng.integers(1, ITEMS + 1, per_file, dtype=np.int32)
        if negatives:
            columns[NEGATIVE_ITEMS] = rng.integers(1, ITEMS + 1, (per_file, negatives), dtype=np.int32)
        table = pa.table({name: fixed_width(v) if v.ndim == 2 else v for name, v in columns.items()})
        pq.write_table(table, f"{directory}/examples/part-{part:05d}.parquet")
    index = np.arange(1, ITEMS + 1, dtype=np.int32)
    pq.write_table(
        pa.table({POSITIVE_ITEM: index, LOG_Q: np.full(ITEMS, -np.log(ITEMS), dtype=np.float32)}),
        f"{directory}/items.parquet",
    )


def fixed_width(matrix: np.ndarray) -> pa.Array:
    offsets = pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel()))


def plain_torch_loop(job: TrainingJob) -> float:
    """The same objective and optimizer stepped over in-memory batches: the ceiling without any pipeline."""
    torch.set_num_threads(threads_per_process(1))
    torch.manual_seed(job.seed)
    network = build_network(job.network)
    item_features, log_q = load_item_table(job.items_path, [encoded_column(f) for f in network.schema.item])
    objective = TrainingObjective(
        network, job.loss, item_features, log_q, job.temperature, job.margin, job.negative_weight
    )
    optimizer = torch.optim.Adam(network.parameters(), lr=job.learning_rate)
    table = pq.read_table(os.path.dirname(job.example_files[0][0]))
    arrays = {}
    for name in objective.batch_columns():
        column = table.column(name).combine_chunks()
        values = column.flatten().to_numpy().reshape(len(column), -1) if pa.types.is_list(column.type) else column.to_numpy()
        arrays[name] = torch.from_numpy(values.astype(np.int64))
    rows = len(table)
    rate = 0.0
    objective.train()
    for _ in range(job.epochs):
        started = time.perf_counter()
        for start in range(0, rows - job.batch_size + 1, job.batch_size):
            batch = {name: values[start : start + job.batch_size] for name, values in arrays.items()}
            optimizer.zero_grad()
            objective(batch).backward()
            optimizer.step()
        rate = (rows // job.batch_size) * job.batch_size / (time.perf_counter() - started)
    return rate


def library_rate(job: TrainingJob) -> float:
    result = train_on_rank(dataclasses.replace(job, backend="local"))
    return result.history[-1]["samples_per_second"]


def horovod_rate(job: TrainingJob) -> float:
    from spark_retrieval.distributed import get_launcher
    from spark_retrieval.session import get_spark

    job = dataclasses.replace(job, backend="horovod")
    launcher = get_launcher("horovod", get_spark(), 1, nics=["lo"], start_timeout=300)
    root = next(r for r in launcher.run(train_on_rank, job) if r.rank == 0)
    return root.history[-1]["samples_per_second"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _harness.add_run_options(parser)
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--no-horovod", action="store_true", help="leave out the Horovod x1 column")
    args = parser.parse_args(argv)
    pin_cpu_capability()  # before torch runs any operation: the kernels the training processes run
    losses = [loss.strip() for loss in args.losses.split(",")]
    unknown = [loss for loss in losses if loss not in LOSSES]
    if unknown:
        parser.error(f"unknown loss(es): {', '.join(unknown)}; choose from {', '.join(LOSSES)}")
    if not args.no_horovod:
        _harness.bench_session(args.master, driver_memory=args.driver_memory)  # started once, before any timing

    threads = threads_per_process(1)
    columns = ["plain", "library"] + ([] if args.no_horovod else ["horovod x1"])
    medians = {}
    with tempfile.TemporaryDirectory(prefix="two-tower-throughput-") as root:
        for loss in losses:
            family, _, negatives, _, objective = LOSSES[loss]
            spec = network_for(loss, args.embedding_dim)
            directory = f"{root}/{loss}"
            write_examples(directory, spec, args.examples, negatives, files=8, seed=args.seed)
            job = TrainingJob(
                network=spec, loss=loss, example_files=list_parquet_files(f"{directory}/examples"),
                items_path=f"{directory}/items.parquet", batch_size=args.batch_size, epochs=args.epochs,
                learning_rate=1e-3, weight_decay=0.0, seed=args.seed, fingerprint="throughput", backend="local",
                verbose=False, **objective,
            )
            measures = {"plain": plain_torch_loop, "library": library_rate, "horovod x1": horovod_rate}
            rates: dict[str, list[float]] = {column: [] for column in columns}
            for run in range(1, args.runs + 1):
                for column in columns:  # interleaved, so drifting load hits every column alike
                    rates[column].append(measures[column](job))
                print(
                    f"{loss} run {run}: " + ", ".join(f"{c} {rates[c][-1]:,.0f}" for c in columns)
                    + f" samples/s ({_harness.load_text()})",
                    flush=True,
                )
            medians[loss] = {column: statistics.median(values) for column, values in rates.items()}
            ratios = {c: medians[loss][c] / medians[loss]["plain"] for c in columns[1:]}
            print(
                f"{loss} ({family}, {negatives or 'in-batch'} negatives) median: "
                + ", ".join(f"{c} {medians[loss][c]:,.0f}" for c in columns)
                + " samples/s; " + ", ".join(f"{c} / plain {ratio:.2f}" for c, ratio in ratios.items()),
                flush=True,
            )
            _harness.record("two_tower_throughput", {
                "loss": loss, "family": family, "negatives": negatives, "examples": args.examples,
                "batch_size": args.batch_size, "epochs": args.epochs, "threads": threads, "rates": rates,
                "medians": medians[loss], "ratios": ratios, "torch": torch.__version__,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            })
    worst = {loss: min(m[c] / m["plain"] for c in columns[1:]) for loss, m in medians.items()}
    print(
        f"{threads} torch threads, CPU kernels {torch.backends.cpu.get_cpu_capability()}, batch {args.batch_size}, {args.examples:,} examples, median of {args.runs}: "
        "smallest library / plain ratio per loss: " + ", ".join(f"{loss} {ratio:.2f}" for loss, ratio in worst.items())
        + f"; over all losses {min(worst.values()):.2f}x"
    )


if __name__ == "__main__":
    main()
