"""Load: I2I and U2I retrieval plus the evaluator under a test set 10× the training users, and the
driver's peak memory with it.

Train: the MovieLens-1M-shaped reference set (``synthetic_interactions``, 6,040 users, 3,706 items, 1M events;
``--interactions`` etc. change it). Item CF and ALS (library defaults) are fitted once and saved under
``--data-dir`` (untimed). Test sets are made by Spark from ``spark.range`` — nothing passes through the driver:
``factor × training users`` queries, each with a training user, a ``last_item`` and a held-out label drawn by
``xxhash64`` (uniform over the training users and the item ids).

For each factor in ``--factors`` (default 1 and 10), in a fresh Python process and ``local[2]`` session
(``--driver-memory``), ``--runs`` times:

* I2I: Item CF ``recommend(test, 20)`` then ``evaluate(…, k=20)``;
* U2I: ALS ``recommend(test, 20)`` (exact top-K, seen items excluded) then ``evaluate(…, k=20)``.

Reported per factor: wall times (median), and peak resident memory sampled every 0.2 s of the driver Python
process, the driver JVM (in local mode the executors are threads of that JVM, so its RSS also carries the
executors' shuffle and cache memory) and the Python workers, plus the JVM heap peak Spark reports. The
driver holds no per-query state (the lists and metrics are computed by the executors; only five averages
come back), so the driver Python process should not grow with the test set. The last line compares the
peaks at the largest factor with those at the smallest.

    .venv/bin/python benchmarks/load.py [--runs 3] [--factors 1,10] [--interactions 1M]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _harness import (add_run_options, ML1M_INTERACTIONS, ML1M_ITEMS, ML1M_USERS, MemorySampler, StageLog,
                      bench_session, emit_result, load_average, load_text, median, parse_size, record, reference_data,
                      run_worker_process, runs_text, session_settings, size_label, timed_cpu)

K = 20


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=ML1M_USERS)
    parser.add_argument("--items", type=int, default=ML1M_ITEMS)
    parser.add_argument("--interactions", type=parse_size, default=ML1M_INTERACTIONS)
    parser.add_argument("--factors", default="1,10", help="test queries per training user, comma-separated")
    add_run_options(parser)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # "fit" or a factor, in a child process
    return parser.parse_args(argv)


def test_queries(spark, num_queries: int, users: int, items: int, seed: int):
    """``query_id, user_id, last_item, item_id`` (the label): ``num_queries`` rows computed by the executors."""
    from pyspark.sql import functions as F

    from spark_retrieval.columns import ITEM_ID, LAST_ITEM, QUERY_ID, USER_ID

    def draw(stream: int, size: int):
        return (F.pmod(F.xxhash64(F.lit(seed), F.lit(stream), F.col("id")), F.lit(size)) + 1).cast("long")

    return spark.range(num_queries).select(
        F.col("id").alias(QUERY_ID), draw(1, users).alias(USER_ID), draw(2, items).alias(LAST_ITEM),
        draw(3, items).alias(ITEM_ID),
    )


def model_paths(args) -> tuple[str, str]:
    base = Path(args.data_dir) / f"load_models_u{args.users}_i{args.items}_n{args.interactions}_s{args.seed}"
    return str(base / "item_cf"), str(base / "als")


def run_worker(args) -> None:
    memory = MemorySampler()
    spark = bench_session(master=args.master, app_name=f"load-{args.worker}", driver_memory=args.driver_memory, ui=True)
    item_cf_path, als_path = model_paths(args)
    data = spark.read.parquet(reference_data(spark, args.users, args.items, args.interactions, args.seed, args.data_dir))
    if args.worker == "fit":
        from spark_retrieval.models import ALS, ItemCF

        for estimator, path in ((ItemCF(), item_cf_path), (ALS(), als_path)):
            if not Path(path, "metadata.json").exists():
                estimator.fit(data).save(path)
        spark.stop()
        emit_result({})
        return

    from pyspark import StorageLevel

    from spark_retrieval.evaluation import evaluate
    from spark_retrieval.models import RetrievalModel

    factor = float(args.worker)
    num_queries = round(factor * args.users)
    test = test_queries(spark, num_queries, args.users, args.items, args.seed).persist(StorageLevel.MEMORY_AND_DISK)
    test.count()
    models = {"i2i_item_cf": RetrievalModel.load(item_cf_path), "u2i_als": RetrievalModel.load(als_path)}
    for model in models.values():
        model.materialize()
    result = {"factor": factor, "queries": num_queries, "settings": session_settings(spark)}
    memory.reset()
    for name, model in models.items():
        runs, cpu, loads, metrics = [], [], [], None
        for _ in range(args.runs):
            metrics, seconds, cpu_s = timed_cpu(lambda: evaluate(model.recommend(test, K), test, k=K))
            runs.append(seconds)
            cpu.append(cpu_s)
            loads.append(load_average())
        result[name] = {"runs_s": runs, "cpu_s": cpu, "run_loads": loads, "metrics": metrics}
    result["memory_mib"] = memory.peaks_mib()
    result["jvm_heap_peak_mib"] = StageLog(spark).executor_peaks().get("JVMHeapMemory")
    memory.stop()
    spark.stop()
    emit_result(result)


def child(args, worker: str) -> dict:
    command = [sys.executable, __file__, "--worker", worker, "--runs", str(args.runs), "--seed", str(args.seed),
               "--users", str(args.users), "--items", str(args.items), "--interactions", str(args.interactions),
               "--master", args.master, "--driver-memory", args.driver_memory, "--data-dir", args.data_dir]
    return run_worker_process(command, worker)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    print(f"train: {args.users} users, {args.items} items, {size_label(args.interactions)} interactions; {load_text()}")
    start = time.perf_counter()
    child(args, "fit")
    print(f"models fitted and saved (or reused): {time.perf_counter() - start:.0f} s")
    results = []
    for factor in [float(text) for text in args.factors.split(",")]:
        result = child(args, f"{factor:g}")
        results.append(result)
        memory = result["memory_mib"]
        print(f"{factor:g}x training users = {result['queries']:,} queries: "
              + "; ".join(f"{name} {median(result[name]['runs_s']):.1f} s (runs {runs_text(result[name]['runs_s'], '')}; "
                          f"CPU s {runs_text(result[name]['cpu_s'], '', 1)})"
                          for name in ("i2i_item_cf", "u2i_als"))
              + f"; peak RSS driver Python {memory['driver_python']} MiB, JVM {memory['jvm']} MiB, Python workers "
                f"{memory['python_workers']} MiB; JVM heap peak {result['jvm_heap_peak_mib']} MiB; {load_text()}", flush=True)
        for name in ("i2i_item_cf", "u2i_als"):
            metrics = result[name]["metrics"]
            print(f"    {name}: " + ", ".join(f"{key} {value:.5f}" if isinstance(value, float) else f"{key} {value}"
                                          for key, value in metrics.items()))
    record("load", {"args": vars(args), "results": results})
    small, large = results[0], results[-1]
    a, b = small["memory_mib"], large["memory_mib"]
    print(f"driver peak RSS at {large['factor']:g}x vs {small['factor']:g}x training users: driver Python "
          f"{b['driver_python']} / {a['driver_python']} MiB ({b['driver_python'] / a['driver_python']:.2f}x), driver JVM "
          f"{b['jvm']} / {a['jvm']} MiB ({b['jvm'] / a['jvm']:.2f}x)")


if __name__ == "__main__":
    main()
