"""Exact top-100 by inner product for 100K queries over 1M items (64-d), Spark next to numpy.

Synthetic two-tower embeddings (generated once with numpy, cached as parquet under ``--data-dir``): items are
64-d float32 vectors whose norms follow a log-normal law (popular items score higher everywhere, as trained
towers tend to), queries are standard normal. Methods, each over the same arrays:

* **Spark**: ``top_k_inner_product(queries, items, k)`` on ``local[2]`` from the parquet files (the 256 MB
  item matrix goes the broadcast path), every row computed into a no-op sink;
* **numpy**: the plain single-node way — float32 ``Q @ Iᵀ`` per batch of queries, ``argpartition`` for the k
  largest, sorted by score then id — on the same two cores (``--threads`` batches at once; BLAS and
  ``argpartition`` release the GIL), arrays already in memory;
* **numpy, library kernel**: ``retrieval.topk.block_top_k`` (the function each Spark task runs) on the same
  threads and arrays, so Spark's own overhead shows apart from the kernel's.

The first Spark run writes its lists to parquet (untimed warm-up); they are compared with the library
kernel's (same ids, same score bits) and with plain numpy's, whose float32 scores may order items whose
exact scores differ by less than float32 rounding differently (counted apart as near-ties; anything else is a
difference). Spark's lists are exact: score descending (float64 dot product of the stored float32 vectors),
then item id. The last line is Spark queries/s over plain numpy queries/s (medians).

    .venv/bin/python benchmarks/two_tower_retrieval.py [--runs 3] [--queries 100K] [--items 1M] [--k 100]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from _harness import (add_run_options, bench_session, load_average, load_text, median, parse_size, record,
                      runs_text, session_settings, size_label, timed_cpu)
from spark_retrieval.columns import ITEM_ID, QUERY_ID, RECOMMENDATIONS
from spark_retrieval.retrieval.topk import SCORE_MATRIX_CELLS, block_top_k, exact_scores, item_block, top_k_inner_product

EMPTY = np.zeros(0, np.int64)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=parse_size, default=100_000)
    parser.add_argument("--items", type=parse_size, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=100)
    add_run_options(parser, driver_memory="6g")
    parser.add_argument("--threads", type=int, default=2, help="numpy batches computed at once")
    parser.add_argument("--skip-kernel", action="store_true", help="leave out the 'numpy, library kernel' row")
    return parser.parse_args()


# -- data -------------------------------------------------------------------------------------------------
def embeddings(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, str]:
    rng = np.random.default_rng(args.seed)
    items = rng.standard_normal((args.items, args.dim), dtype=np.float32)
    items *= (np.exp(0.5 * rng.standard_normal(args.items)) / np.sqrt(args.dim)).astype(np.float32)[:, None]
    item_ids = rng.permutation(args.items).astype(np.int64) + 1
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    folder = Path(args.data_dir) / f"two_tower_q{args.queries}_i{args.items}_d{args.dim}_s{args.seed}"
    query_path, item_path = str(folder / "queries.parquet"), str(folder / "items.parquet")
    if not (folder / "done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_vectors(query_path, QUERY_ID, np.arange(args.queries, dtype=np.int64), queries)
        write_vectors(item_path, ITEM_ID, item_ids, items)
        (folder / "done").touch()
    return queries, items, item_ids, query_path, item_path


def write_vectors(path: str, id_name: str, ids: np.ndarray, vectors: np.ndarray, rows_per_file: int = 100_000) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
    dim = vectors.shape[1]
    for part, start in enumerate(range(0, len(ids), rows_per_file)):
        chunk = vectors[start : start + rows_per_file]
        offsets = pa.array(np.arange(0, (len(chunk) + 1) * dim, dim, dtype=np.int32))
        column = pa.ListArray.from_arrays(offsets, pa.array(chunk.ravel()))
        table = pa.table({id_name: ids[start : start + rows_per_file], "vector": column})
        pq.write_table(table, f"{path}/part-{part:05d}.parquet")


# -- single node ------------------------------------------------------------------------------------------
def batches(count: int, rows: int) -> list[tuple[int, int]]:
    return [(start, min(start + rows, count)) for start in range(0, count, rows)]


def numpy_top_k(queries, items, item_ids, k, threads) -> tuple[np.ndarray, np.ndarray]:
    """Plain numpy: float32 scores, the k largest by argpartition, ordered by score then id."""
    rows = max(1, SCORE_MATRIX_CELLS // len(items))
    out_ids = np.empty((len(queries), k), np.int64)
    out_scores = np.empty((len(queries), k), np.float32)

    def run(span):
        start, stop = span
        scores = queries[start:stop] @ items.T
        best = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]
        best_scores = np.take_along_axis(scores, best, axis=1)
        best_ids = item_ids[best]
        order = np.lexsort((best_ids, -best_scores), axis=1)
        out_ids[start:stop] = np.take_along_axis(best_ids, order, axis=1)
        out_scores[start:stop] = np.take_along_axis(best_scores, order, axis=1)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, batches(len(queries), rows)))
    return out_ids, out_scores


def kernel_top_k(queries, block, k, threads) -> tuple[np.ndarray, np.ndarray]:
    """The library's per-task kernel over the same arrays (exact lists)."""
    rows = max(1, SCORE_MATRIX_CELLS // len(block.ids))
    out_ids = np.empty((len(queries), k), np.int64)
    out_scores = np.empty((len(queries), k), np.float64)

    def run(span):
        start, stop = span
        _, ids, scores = block_top_k(queries[start:stop], EMPTY, EMPTY, block, k, rows)
        out_ids[start:stop] = ids.reshape(-1, k)
        out_scores[start:stop] = scores.reshape(-1, k)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, batches(len(queries), rows * 8)))
    return out_ids, out_scores


# -- comparison -------------------------------------------------------------------------------------------
def spark_lists(path: str, queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path)
    query_ids = table.column(QUERY_ID).to_numpy()
    lists = table.column(RECOMMENDATIONS).combine_chunks()
    entries = lists.flatten()
    if np.any(lists.value_lengths().to_numpy() != k):
        raise SystemExit("a Spark list is shorter than k")
    ids = np.empty((queries, k), np.int64)
    scores = np.empty((queries, k), np.float64)
    ids[query_ids] = entries.field(ITEM_ID).to_numpy().reshape(-1, k)
    scores[query_ids] = entries.field("score").to_numpy().reshape(-1, k)
    return ids, scores


def near_tie_report(spark_ids, spark_scores, numpy_ids, queries, items, item_ids) -> tuple[int, int, int]:
    """``(identical lists, lists differing only within float32 rounding, lists with real differences)``."""
    same = np.all(spark_ids == numpy_ids, axis=1)
    position = np.empty(item_ids.max() + 1, np.int64)
    position[item_ids] = np.arange(len(item_ids))
    near = different = 0
    dim = queries.shape[1]
    bound = 4.0 * dim * (np.finfo(np.float32).eps + np.finfo(np.float64).eps) * float(np.linalg.norm(items, axis=1).max())
    for row in np.flatnonzero(~same):
        cols = position[numpy_ids[row]]
        theirs = exact_scores(queries, items, np.full(len(cols), row), cols)
        tolerance = bound * float(np.linalg.norm(queries[row]))
        if np.all(np.abs(theirs - spark_scores[row]) <= 2 * tolerance):
            near += 1
        else:
            different += 1
    return int(same.sum()), near, different


def main() -> None:
    args = parse_args()
    queries, items, item_ids, query_path, item_path = embeddings(args)
    print(f"{size_label(args.queries)} queries x {size_label(args.items)} items, {args.dim}-d float32, top {args.k}; "
          f"{load_text()}")
    spark = bench_session(master=args.master, app_name="two-tower-retrieval", driver_memory=args.driver_memory)
    query_frame, item_frame = spark.read.parquet(query_path), spark.read.parquet(item_path)

    def spark_run(sink):
        return timed_cpu(lambda: sink(top_k_inner_product(query_frame, item_frame, args.k).write))[1:]

    output = tempfile.mkdtemp(prefix="two-tower-lists-")
    try:
        warm_s, _ = spark_run(lambda writer: writer.mode("overwrite").parquet(f"{output}/lists"))
        print(f"Spark warm-up run writing the lists to parquet: {warm_s:.1f} s, {load_text()}")
        spark_ids, spark_scores = spark_lists(f"{output}/lists", args.queries, args.k)
    finally:
        shutil.rmtree(output, ignore_errors=True)

    block = item_block(item_ids, items)
    kernel_ids, kernel_scores = kernel_top_k(queries[:2000], block, args.k, args.threads)  # warm-up
    spark_runs, numpy_runs, kernel_runs, loads, cpu = [], [], [], [], {"spark": [], "numpy": [], "kernel": []}
    for run in range(1, args.runs + 1):
        spark_s, spark_c = spark_run(lambda writer: writer.format("noop").mode("overwrite").save())
        (numpy_ids, _), numpy_s, numpy_c = timed_cpu(lambda: numpy_top_k(queries, items, item_ids, args.k, args.threads))
        spark_runs.append(spark_s)
        numpy_runs.append(numpy_s)
        cpu["spark"].append(spark_c)
        cpu["numpy"].append(numpy_c)
        line = (f"run {run}: Spark {spark_s:.1f} s ({args.queries / spark_s:,.0f} q/s, CPU {spark_c:.0f} s), numpy "
                f"{numpy_s:.1f} s ({args.queries / numpy_s:,.0f} q/s, CPU {numpy_c:.0f} s)")
        if not args.skip_kernel:
            (kernel_ids, kernel_scores), kernel_s, kernel_c = timed_cpu(lambda: kernel_top_k(queries, block, args.k, args.threads))
            kernel_runs.append(kernel_s)
            cpu["kernel"].append(kernel_c)
            line += f", numpy library kernel {kernel_s:.1f} s ({args.queries / kernel_s:,.0f} q/s, CPU {kernel_c:.0f} s)"
        loads.append(load_average())
        print(f"{line}; {load_text()}")

    identical, near, different = near_tie_report(spark_ids, spark_scores, numpy_ids, queries, items, item_ids)
    print(f"Spark vs plain numpy: {identical} identical lists, {near} differ only where float32 scores tie within "
          f"rounding, {different} differ")
    kernel_same = None
    if not args.skip_kernel:
        kernel_same = int(np.sum(np.all(kernel_ids == spark_ids, axis=1) & np.all(kernel_scores == spark_scores, axis=1)))
        print(f"Spark vs library kernel in one process: {kernel_same} of {args.queries} lists identical (ids and score bits)")

    rates = lambda runs: [args.queries / seconds for seconds in runs]
    record("two_tower_retrieval", {"args": vars(args), "settings": session_settings(spark), "spark_s": spark_runs,
                                   "numpy_s": numpy_runs, "numpy_kernel_s": kernel_runs, "cpu_s": cpu, "run_loads": loads,
                                   "identical": identical, "near_ties": near, "different": different,
                                   "kernel_identical": kernel_same})
    spark.stop()
    print(f"Spark runs {runs_text(spark_runs)}; numpy runs {runs_text(numpy_runs)}"
          + (f"; numpy library kernel runs {runs_text(kernel_runs)}" if kernel_runs else ""))
    if kernel_runs:
        print(f"numpy library kernel median: {median(rates(kernel_runs)):,.0f} queries/s")
    print("CPU seconds per 1,000 queries (driver + JVM + Python workers), medians: "
          + ", ".join(f"{name} {median(values) * 1000 / args.queries:.2f} s" for name, values in cpu.items() if values))
    if different or (kernel_same is not None and kernel_same != args.queries):
        sys.exit("lists differ")
    spark_rate, numpy_rate = median(rates(spark_runs)), median(rates(numpy_runs))
    print(f"Spark {spark_rate:,.0f} queries/s / numpy {numpy_rate:,.0f} queries/s = {spark_rate / numpy_rate:.2f}x "
          f"(exact top-{args.k}, {size_label(args.queries)} queries x {size_label(args.items)} items)")


if __name__ == "__main__":
    main()
