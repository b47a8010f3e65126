"""Which Spark settings matter for this library: one workload at 1M interactions under several configurations.

Workload (the MovieLens-1M-shaped reference set split by the protocol; parquet cached under ``--data-dir``):

* ``item_cf_fit``: ``ItemCF().fit(train)``, neighbour table materialised;
* ``i2i_eval``: Item CF ``recommend(test, 20)`` + ``evaluate(…, catalog=train)``;
* ``u2i_eval``: ALS (rank 64, 5 iterations, fitted once per data set and saved, untimed) ``recommend(test, 20)``
  with seen items excluded + ``evaluate``.

Each configuration runs in its own process and ``local[2]`` session (the library's local defaults, then the
configuration's overrides), ``--runs`` times after one untimed warm-up pass; wall and CPU seconds (driver, JVM
and Python workers) are recorded. Every configuration must give the same results: its Item CF neighbour table
is compared with the first configuration's (same ids in the same order; largest score difference, which is
0 unless the Arrow batch size changes how Item CF's sums are grouped) and so are the metrics. The last line
names the fastest configuration by total median wall time and its ratio to the library defaults.

    .venv/bin/python benchmarks/spark_conf_sweep.py [--runs 3] [--configs defaults,partitions_200,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _harness import (add_run_options, ML1M_INTERACTIONS, ML1M_ITEMS, ML1M_USERS, bench_session, load_average,
                      load_text, median, parse_size, record, reference_data, session_settings, timed_cpu)

CONFIGS = {
    "defaults": {},
    "partitions_2": {"spark.sql.shuffle.partitions": "2"},
    "partitions_200": {"spark.sql.shuffle.partitions": "200"},
    "aqe_off": {"spark.sql.adaptive.enabled": "false"},
    "arrow_2000": {"spark.sql.execution.arrow.maxRecordsPerBatch": "2000"},
    "arrow_50000": {"spark.sql.execution.arrow.maxRecordsPerBatch": "50000"},
    "broadcast_off": {"spark.sql.autoBroadcastJoinThreshold": "-1"},
    "broadcast_64m": {"spark.sql.autoBroadcastJoinThreshold": str(64 << 20)},
}
STEPS = ("item_cf_fit", "i2i_eval", "u2i_eval")
K = 20


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    add_run_options(parser)
    parser.add_argument("--users", type=int, default=ML1M_USERS)
    parser.add_argument("--items", type=int, default=ML1M_ITEMS)
    parser.add_argument("--interactions", type=parse_size, default=ML1M_INTERACTIONS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def prepared(spark, args) -> tuple[str, str, str]:
    """Paths of the train and test parquet and of the saved ALS model, made on first use."""
    from spark_retrieval.data.split import temporal_split
    from spark_retrieval.models import ALS

    folder = Path(args.data_dir) / f"sweep_u{args.users}_i{args.items}_n{args.interactions}_s{args.seed}"
    train_path, test_path, als_path = (str(folder / name) for name in ("train", "test", "als"))
    if not Path(test_path, "_SUCCESS").exists():
        split = temporal_split(spark.read.parquet(
            reference_data(spark, args.users, args.items, args.interactions, args.seed, args.data_dir)))
        split.train.write.mode("overwrite").parquet(train_path)
        split.test.write.mode("overwrite").parquet(test_path)
    if not Path(als_path, "metadata.json").exists():
        ALS(max_iter=5).fit(spark.read.parquet(train_path)).save(als_path)
    return train_path, test_path, als_path


def run_worker(args) -> None:
    from spark_retrieval.evaluation import evaluate
    from spark_retrieval.models import ItemCF, RetrievalModel

    overrides = CONFIGS[args.worker]
    spark = bench_session(master=args.master, app_name=f"sweep-{args.worker}", driver_memory=args.driver_memory,
                          conf=overrides)
    train_path, test_path, als_path = prepared(spark, args)
    train, test = spark.read.parquet(train_path).cache(), spark.read.parquet(test_path).cache()
    train.count(), test.count()
    als = RetrievalModel.load(als_path).materialize()
    times = {step: [] for step in STEPS}
    cpu = {step: [] for step in STEPS}
    outputs = {}
    for run in range(args.runs + 1):  # run 0 warms up and is not counted
        model, fit_s, fit_c = timed_cpu(lambda: ItemCF().fit(train))
        i2i, i2i_s, i2i_c = timed_cpu(lambda: evaluate(model.recommend(test, K), test, k=K, catalog=train))
        u2i, u2i_s, u2i_c = timed_cpu(lambda: evaluate(als.recommend(test, K), test, k=K, catalog=train))
        if run == 0:
            table = Path(args.data_dir) / "sweep_outputs" / args.worker
            model.neighbour_table.write.mode("overwrite").parquet(str(table))
            outputs = {"neighbour_table": str(table), "i2i": i2i, "u2i": u2i}
        else:
            for step, seconds, cpu_s in zip(STEPS, (fit_s, i2i_s, u2i_s), (fit_c, i2i_c, u2i_c)):
                times[step].append(seconds)
                cpu[step].append(cpu_s)
        model.unpersist()
    result = {"config": args.worker, "overrides": overrides, "settings": session_settings(spark), "times_s": times,
              "cpu_s": cpu, "outputs": outputs, "load_at_end": load_average()}
    spark.stop()
    print("RESULT " + json.dumps(result), flush=True)


def compared(first: dict, other: dict) -> str:
    """How ``other``'s outputs differ from ``first``'s: neighbour ids, largest score difference, metrics."""
    import numpy as np
    import pandas as pd

    def entries(path):
        frame = pd.read_parquet(path).sort_values("item_id")
        ids = [(row.item_id, [e["item_id"] for e in row.neighbours]) for row in frame.itertuples()]
        scores = np.concatenate([[e["score"] for e in row.neighbours] for row in frame.itertuples()])
        return ids, scores

    ids_a, scores_a = entries(first["neighbour_table"])
    ids_b, scores_b = entries(other["neighbour_table"])
    if ids_a != ids_b:
        return "Item CF neighbour lists DIFFER"
    metrics = max(abs(first[key][name] - other[key][name]) for key in ("i2i", "u2i") for name in first[key])
    return (f"same neighbour lists (largest score difference {np.max(np.abs(scores_a - scores_b)):.1e}), "
            f"largest metric difference {metrics:.1e}")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    results = []
    for name in args.configs.split(","):
        if name not in CONFIGS:
            raise SystemExit(f"unknown configuration {name!r}: {', '.join(CONFIGS)}")
        started = load_text()
        command = [sys.executable, __file__, "--worker", name, "--runs", str(args.runs), "--users", str(args.users),
                   "--items", str(args.items), "--interactions", str(args.interactions), "--seed", str(args.seed),
                   "--master", args.master, "--driver-memory", args.driver_memory, "--data-dir", args.data_dir]
        completed = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
        if completed.returncode or not lines:
            print(f"{name}: FAILED\n" + "\n".join(completed.stderr.splitlines()[-15:]))
            continue
        result = json.loads(lines[-1][len("RESULT "):])
        results.append(result)
        medians = {step: median(values) for step, values in result["times_s"].items()}
        cpu = sum(median(values) for values in result["cpu_s"].values())
        result["comparison"] = compared(results[0]["outputs"], result["outputs"])
        print(f"{name:15s} " + ", ".join(f"{step} {value:6.1f} s" for step, value in medians.items())
              + f", total {sum(medians.values()):6.1f} s (CPU {cpu:6.1f} s); {result['comparison']}; {started} → "
              f"{load_text()}", flush=True)
    record("spark_conf_sweep", {"args": vars(args), "results": results})
    totals = {r["config"]: sum(median(v) for v in r["times_s"].values()) for r in results}
    if "defaults" in totals:
        best = min(totals, key=totals.get)
        print(f"fastest: {best} {totals[best]:.1f} s total vs defaults {totals['defaults']:.1f} s = "
              f"{totals[best] / totals['defaults']:.2f}x")


if __name__ == "__main__":
    main()
