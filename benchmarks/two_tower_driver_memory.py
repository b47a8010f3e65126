"""Two-tower driver memory as users grow: a fit, then every user's and item's embedding, with the driver's peak RSS.

Data, made by the executors from ``spark.range`` (nothing passes through the driver): ``--users`` users with
``--events-per-user`` events each (rating 4, timestamps in order) over ``--items`` items drawn by ``xxhash64``.
Model: DSSM (sampled softmax) on an id-only schema — the user tower is ``user_id``'s embedding, the item tower
``item_id``'s, ``--dim`` wide, plus DSSM's MLP — so the trained weights are about ``(users + items) × dim``
floats, and grow with the users. One epoch (the cost measured here is memory, not quality).

For each user count in ``--users`` (comma-separated), in a fresh Python process and ``local[2]`` session,
``--runs`` times: peak resident memory of the driver Python process, the driver JVM (executors included, in
local mode) and the Python workers (training processes included), sampled every 0.2 s, for two phases:

* ``fit``: ``DSSM(...).fit(events)``;
* ``embed``: ``item_embeddings()`` and ``user_embeddings(every user)`` computed and discarded (``noop`` sink).

The driver's RSS before the fit (Spark and torch imported, session started) is printed too, so what the phases
add to it is visible. If the weights passed through the driver, its peak would grow by a few times their size.

    .venv/bin/python benchmarks/two_tower_driver_memory.py [--users 250000,1000000] [--runs 3] [--label TEXT]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _harness import (MemorySampler, add_run_options, bench_session, emit_result, load_average, load_text, median,
                      record, run_worker_process, runs_text)

SCHEMA = """\
name: ids_only
model: dssm
vocabularies:
  user: {table: interactions, column: user_id}
  item: {table: interactions, column: item_id}
towers:
  user:
    user_id: {kind: categorical, source: context, vocabulary: user, embedding_dim: DIM}
  item:
    item_id: {kind: categorical, source: interactions, vocabulary: item, embedding_dim: DIM}
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="250000,1000000", help="user counts, comma-separated")
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--events-per-user", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--label", default="", help="recorded with the results, e.g. which code was measured")
    add_run_options(parser, driver_memory="4g")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a user count, in a child process
    return parser.parse_args(argv)


def events(spark, users: int, items: int, per_user: int, seed: int):
    from pyspark.sql import functions as F

    from spark_retrieval.columns import ITEM_ID, RATING, TIMESTAMP, USER_ID

    item = F.pmod(F.xxhash64(F.lit(seed), F.col("id")), F.lit(items)) + 1
    return spark.range(users * per_user).select(
        (F.floor(F.col("id") / per_user) + 1).cast("long").alias(USER_ID),
        item.cast("long").alias(ITEM_ID),
        F.lit(4.0).alias(RATING),
        F.col("id").alias(TIMESTAMP),
    )


def run_worker(args) -> None:
    from pyspark.sql import functions as F

    from spark_retrieval.columns import QUERY_ID, USER_ID
    from spark_retrieval.models.two_tower import DSSM

    users = int(args.worker)
    memory = MemorySampler()
    spark = bench_session(master=args.master, app_name=f"two-tower-driver-memory-{users}", driver_memory=args.driver_memory)
    with tempfile.TemporaryDirectory(prefix="ids-only-schema-") as folder:
        schema = Path(folder, "ids_only.yaml")
        schema.write_text(SCHEMA.replace("DIM", str(args.dim)))
        train = events(spark, users, args.items, args.events_per_user, args.seed).cache()
        train.count()
        queries = spark.range(users).select(F.col("id").alias(QUERY_ID), (F.col("id") + 1).alias(USER_ID))
        before = memory.sample()["driver_python"] / 2**20
        memory.reset()
        started = time.perf_counter()
        model = DSSM(schema=str(schema), loss="sampled_softmax", epochs=1, batch_size=1024, hidden_dims=[args.dim],
                     seed=args.seed, verbose=False).fit(train)
        fit_seconds = time.perf_counter() - started
        fit_peaks = memory.peaks_mib()
        memory.reset()
        started = time.perf_counter()
        model.item_embeddings().write.format("noop").mode("overwrite").save()
        model.user_embeddings(queries).write.format("noop").mode("overwrite").save()
        embed_seconds = time.perf_counter() - started
        embed_peaks = memory.peaks_mib()
    weights = sum(tensor.numel() * tensor.element_size() for tensor in model.network().state_dict().values())
    memory.stop()
    spark.stop()
    result = {"users": users, "weights_mib": weights / 2**20, "driver_before_mib": round(before),
              "fit_s": fit_seconds, "embed_s": embed_seconds, "fit_peaks_mib": fit_peaks, "embed_peaks_mib": embed_peaks,
              "load": load_average()}
    emit_result(result)


def child(args, users: int) -> dict:
    command = [sys.executable, __file__, "--worker", str(users), "--items", str(args.items), "--events-per-user",
               str(args.events_per_user), "--dim", str(args.dim), "--seed", str(args.seed), "--master", args.master,
               "--driver-memory", args.driver_memory]
    return run_worker_process(command, str(users))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    print(f"{args.items:,} items, {args.events_per_user} events per user, dim {args.dim}; {load_text()}")
    summary = []
    for users in [int(text) for text in args.users.split(",")]:
        runs = [child(args, users) for _ in range(args.runs)]
        record("two_tower_driver_memory", {"args": vars(args), "users": users, "runs": runs})

        def peaks(phase: str, part: str) -> list[float]:
            return [run[f"{phase}_peaks_mib"][part] for run in runs]

        row = {"users": users, "weights_mib": runs[0]["weights_mib"],
               "before": median([run["driver_before_mib"] for run in runs]),
               "fit": median(peaks("fit", "driver_python")), "embed": median(peaks("embed", "driver_python"))}
        summary.append(row)
        print(f"{users:,} users: weights {row['weights_mib']:.1f} MiB; driver Python peak RSS before {row['before']:.0f}, "
              f"fit {row['fit']:.0f} (runs {runs_text(peaks('fit', 'driver_python'), '', 0)}), embed {row['embed']:.0f} "
              f"(runs {runs_text(peaks('embed', 'driver_python'), '', 0)}) MiB; JVM fit {median(peaks('fit', 'jvm')):.0f}, "
              f"Python workers fit {median(peaks('fit', 'python_workers')):.0f} MiB; fit "
              f"{runs_text([run['fit_s'] for run in runs])}, embed {runs_text([run['embed_s'] for run in runs])}; "
              f"{load_text()}", flush=True)
    small, large = summary[0], summary[-1]
    print(f"driver Python peak RSS at {large['users']:,} vs {small['users']:,} users (weights {large['weights_mib']:.0f} vs "
          f"{small['weights_mib']:.0f} MiB): fit {large['fit']:.0f} vs {small['fit']:.0f} MiB, embed {large['embed']:.0f} vs "
          f"{small['embed']:.0f} MiB")


if __name__ == "__main__":
    main()
