"""The evaluator at 1M queries next to Spark MLlib's RankingMetrics — same values (1e-9), wall time.

Data (generated once, cached as parquet under ``--data-dir``; generation is not timed): ``--queries`` queries
with 1–5 held-out items each (a few share an item twice, as a test set may) and a top-``k`` list each drawn
from the same Zipf popularity over ``--items`` items, so hits are common; 2 % of the queries have no
recommendation row and 5 % a list shorter than ``k``. Lists are drawn with replacement, so an item may appear
twice in one (both evaluators count it at each position).

Timed, each from the parquet files to the final numbers:

* ``evaluate(recommendations, test, k)``: precision, recall, MAP, NDCG and hit rate @k in one job;
* RankingMetrics, JVM: the (predicted ids, distinct labels) pairs built by the same join as a DataFrame and
  persisted, then ``precisionAt``, ``recallAt``, ``meanAveragePrecisionAt`` and ``ndcgAt`` (four passes) on
  ``org.apache.spark.mllib.evaluation.RankingMetrics`` through PythonMLLibAPI, with no Python rows — the
  fastest way to drive it from PySpark, and the baseline;
* ``--with-python-api``: also the documented PySpark route, ``RankingMetrics(rdd)`` on an RDD of Python
  lists (rows pickled through the Python workers), once.

The values are compared with a 1e-9 tolerance. Each run also reports the CPU seconds the whole process tree
used (driver, JVM, Python workers), which load from other jobs changes far less than wall time. The last line
is evaluator median / RankingMetrics median (wall time).

    .venv/bin/python benchmarks/evaluator_vs_rankingmetrics.py [--runs 3] [--queries 1M] [--k 20]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.mllib.common import JavaModelWrapper, callMLlibFunc
from pyspark.mllib.evaluation import RankingMetrics
from pyspark.sql import functions as F
from pyspark.sql import types as T

from _harness import (add_run_options, bench_session, load_average, load_text, median, parse_size, record,
                      runs_text, session_settings, size_label, timed, timed_cpu)
from spark_retrieval.columns import ITEM_ID, QUERY_ID, RECOMMENDATIONS, SCORE
from spark_retrieval.evaluation import evaluate

QUERIES_PER_BLOCK = 20_000
METRICS = ("precision", "recall", "map", "ndcg")
TOLERANCE = 1e-9

RECS_SCHEMA = T.StructType([
    T.StructField(QUERY_ID, T.LongType(), False),
    T.StructField(RECOMMENDATIONS, T.ArrayType(T.StructType([T.StructField(ITEM_ID, T.LongType()),
                                                              T.StructField(SCORE, T.DoubleType())]))),
])
TEST_SCHEMA = T.StructType([T.StructField(QUERY_ID, T.LongType(), False), T.StructField(ITEM_ID, T.LongType(), False)])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=parse_size, default=1_000_000)
    parser.add_argument("--items", type=int, default=3706)
    parser.add_argument("--k", type=int, default=20)
    add_run_options(parser)
    parser.add_argument("--with-python-api", action="store_true", help="also time RankingMetrics(rdd) once")
    return parser.parse_args()


# -- data -------------------------------------------------------------------------------------------------
def block_table(block: int, part: int, queries: int, items: int, k: int, seed: int) -> pa.RecordBatch:
    """Part 0: the recommendation rows of the queries of ``block``; part 1: their test rows. Each part has its
    own numpy stream, seeded by (seed, block, part)."""
    rng = np.random.default_rng([seed, block, part])
    first = block * QUERIES_PER_BLOCK
    ids = np.arange(first, min(first + QUERIES_PER_BLOCK, queries), dtype=np.int64)
    cumulative = np.cumsum(np.arange(1, items + 1) ** -0.9)

    def popular(size):  # item ids drawn with Zipf(0.9) popularity
        return np.minimum(np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right") + 1, items)

    if part == 1:
        label_counts = rng.integers(1, 6, len(ids))
        return pa.RecordBatch.from_arrays(
            [pa.array(np.repeat(ids, label_counts)), pa.array(popular(label_counts.sum()).astype(np.int64))],
            names=[QUERY_ID, ITEM_ID],
        )
    # Lists drawn with replacement: a list may hold an item twice, which both evaluators count at each position.
    lengths = np.where(rng.random(len(ids)) < 0.05, rng.integers(0, k, len(ids)), k)
    has_row = rng.random(len(ids)) >= 0.02
    lengths = lengths[has_row]
    positions = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    entries = pa.StructArray.from_arrays(
        [pa.array(popular(lengths.sum()).astype(np.int64)), pa.array((k - positions).astype(np.float64))],
        names=[ITEM_ID, SCORE],
    )
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    return pa.RecordBatch.from_arrays(
        [pa.array(ids[has_row]), pa.ListArray.from_arrays(offsets, entries)], names=[QUERY_ID, RECOMMENDATIONS]
    )


def cached_data(spark, args) -> tuple[str, str]:
    folder = Path(args.data_dir) / f"eval_q{args.queries}_i{args.items}_k{args.k}_s{args.seed}"
    recs_path, test_path = str(folder / "recommendations.parquet"), str(folder / "test.parquet")
    if (folder / "test.parquet" / "_SUCCESS").exists():
        return recs_path, test_path
    blocks = math.ceil(args.queries / QUERIES_PER_BLOCK)
    settings = (args.queries, args.items, args.k, args.seed)

    def generate(part):  # which of the two tables a block yields is chosen by `part`
        def run(batches):
            for batch in batches:
                for block in batch.column("id").to_pylist():
                    yield block_table(block, part, *settings)
        return run

    source = spark.range(0, blocks, numPartitions=min(blocks, spark.sparkContext.defaultParallelism))
    source.mapInArrow(generate(0), RECS_SCHEMA).write.mode("overwrite").parquet(recs_path)
    source.mapInArrow(generate(1), TEST_SCHEMA).write.mode("overwrite").parquet(test_path)
    return recs_path, test_path


# -- RankingMetrics -------------------------------------------------------------------------------------------
def ranking_metrics_input(recommendations, test):
    """(predicted ids, distinct labels) per test query; a query without recommendations gets an empty list."""
    labels = test.groupBy(QUERY_ID).agg(F.array_distinct(F.collect_list(ITEM_ID)).alias("labels"))
    predicted = recommendations.select(QUERY_ID, F.transform(RECOMMENDATIONS, lambda r: r[ITEM_ID]).alias("predicted"))
    joined = labels.join(predicted, QUERY_ID, "left")
    return joined.select(F.coalesce("predicted", F.array().cast("array<long>")).alias("predicted"), "labels")


def four_metrics(metrics, k: int) -> dict:
    return {"precision": metrics.precisionAt(k), "recall": metrics.recallAt(k),
            "map": metrics.meanAveragePrecisionAt(k), "ndcg": metrics.ndcgAt(k)}


def ranking_metrics_jvm(recommendations, test, k: int) -> dict:
    pairs = ranking_metrics_input(recommendations, test).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        pairs.count()
        wrapper = RankingMetrics.__new__(RankingMetrics)
        JavaModelWrapper.__init__(wrapper, callMLlibFunc("newRankingMetrics", pairs._jdf))
        return four_metrics(wrapper, k)
    finally:
        pairs.unpersist()


def ranking_metrics_python(recommendations, test, k: int) -> dict:
    rdd = ranking_metrics_input(recommendations, test).rdd.map(lambda row: (list(row[0]), list(row[1])))
    return four_metrics(RankingMetrics(rdd), k)


def largest_difference(ours: dict, theirs: dict) -> float:
    return max(abs(ours[name] - theirs[name]) for name in METRICS)


def main() -> None:
    args = parse_args()
    spark = bench_session(master=args.master, app_name="evaluator-vs-rankingmetrics", driver_memory=args.driver_memory)
    recs_path, test_path = cached_data(spark, args)
    recommendations, test = spark.read.parquet(recs_path), spark.read.parquet(test_path)
    print(f"{size_label(args.queries)} queries, {test.count()} test rows, {recommendations.count()} recommendation "
          f"rows, k {args.k}, {load_text()}")

    evaluate(recommendations, test, args.k)  # warm-up (JIT, first parquet reads), untimed
    ours_runs, theirs_runs, ours_cpu, theirs_cpu, loads, worst = [], [], [], [], [], 0.0
    for run in range(1, args.runs + 1):
        ours, ours_s, ours_c = timed_cpu(lambda: evaluate(recommendations, test, args.k))
        theirs, theirs_s, theirs_c = timed_cpu(lambda: ranking_metrics_jvm(recommendations, test, args.k))
        ours_runs.append(ours_s)
        theirs_runs.append(theirs_s)
        ours_cpu.append(ours_c)
        theirs_cpu.append(theirs_c)
        loads.append(load_average())
        worst = max(worst, largest_difference(ours, theirs))
        print(f"run {run}: evaluate {ours_s:.2f} s (CPU {ours_c:.1f} s), RankingMetrics (JVM) {theirs_s:.2f} s "
              f"(CPU {theirs_c:.1f} s), ratio {ours_s / theirs_s:.2f}; largest metric difference "
              f"{largest_difference(ours, theirs):.1e}; {load_text()}")
    print("values: " + ", ".join(f"{name} {ours[name]:.10f} / {theirs[name]:.10f}" for name in METRICS)
          + f", hit_rate {ours['hit_rate']:.10f}, queries {ours['queries']}")

    python_s = None
    if args.with_python_api:
        python_metrics, python_s = timed(lambda: ranking_metrics_python(recommendations, test, args.k))
        worst = max(worst, largest_difference(ours, python_metrics))
        print(f"RankingMetrics(rdd), PySpark API: {python_s:.2f} s (one run), largest metric difference "
              f"{largest_difference(ours, python_metrics):.1e}")

    record("evaluator_vs_rankingmetrics", {"args": vars(args), "settings": session_settings(spark),
                                            "evaluate_s": ours_runs, "ranking_metrics_jvm_s": theirs_runs,
                                            "evaluate_cpu_s": ours_cpu, "ranking_metrics_jvm_cpu_s": theirs_cpu,
                                            "ranking_metrics_python_s": python_s, "run_loads": loads,
                                            "largest_difference": worst, "values": ours})
    spark.stop()
    print(f"evaluate runs: {runs_text(ours_runs)}; RankingMetrics (JVM) runs: {runs_text(theirs_runs)}")
    print(f"CPU seconds (driver + JVM + Python workers), medians: evaluate {median(ours_cpu):.1f} s, RankingMetrics "
          f"{median(theirs_cpu):.1f} s = {median(ours_cpu) / median(theirs_cpu):.2f}x")
    if worst > TOLERANCE:
        sys.exit(f"metrics differ from RankingMetrics by {worst:.1e} (> {TOLERANCE})")
    print(f"evaluate median {median(ours_runs):.2f} s / RankingMetrics median {median(theirs_runs):.2f} s = "
          f"{median(ours_runs) / median(theirs_runs):.2f}x (values equal within {TOLERANCE})")


if __name__ == "__main__":
    main()
