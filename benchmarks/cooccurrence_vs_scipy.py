"""Item CF on Spark next to the same similarities computed on one node with scipy.

Synthetic power-law interactions shaped like MovieLens-1M by default (6,040 users, 3,706 items, ≈1M events)
are written to parquet first (cached under ``--data-dir``), so neither side's timing includes generating
them. Spark times cover ``fit`` (which materialises the neighbour table) plus a count of the table; the
single-node times cover reading the parquet file, the sparse products and the top-k. One untimed Item CF fit
warms the session up (JVM JIT, Python workers); then ``--runs`` pairs of (Spark fit, scipy computation)
alternate, each pair's tables are compared (largest score difference), and the medians give the ratio.
``--with-swing`` adds one Swing fit and a single-node Swing whose per-item user sample is drawn with numpy
rather than xxhash64, so only its time is comparable (``swing_at_1m.py`` checks Swing's values).
The last line is the ratio of the medians.

    .venv/bin/python benchmarks/cooccurrence_vs_scipy.py [--runs 3] [--users N --items N --interactions N]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spark_retrieval.columns import ITEM_ID, USER_ID
from spark_retrieval.models.item_cf import ItemCF
from spark_retrieval.models.swing import Swing, swing_scores
from _harness import (add_run_options, bench_session, load_average, load_text, median, record, reference_data,
                      runs_text, session_settings, timed_cpu)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=3706)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    add_run_options(parser, runs_help="timed Spark + scipy pairs after one warm-up fit")
    parser.add_argument("--k", type=int, default=100, help="neighbours per item")
    parser.add_argument("--with-swing", action="store_true", help="also time Swing once (see swing_at_1m.py)")
    parser.add_argument("--skip-swing-baseline", action="store_true", help="no single-node Swing (the slow part)")
    return parser.parse_args()


def fit_and_count(estimator, train):
    model = estimator.fit(train)
    return model, model.neighbour_table.count()


def timed(action):
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


# -- single node ------------------------------------------------------------------------------------
def user_item_matrix(path: str) -> tuple[sp.csr_matrix, np.ndarray]:
    """Binary users × items matrix of the distinct (user, item) pairs, and the item id of each column."""
    frame = pd.read_parquet(path, columns=[USER_ID, ITEM_ID])
    _, users = np.unique(frame[USER_ID].to_numpy(), return_inverse=True)
    item_ids, items = np.unique(frame[ITEM_ID].to_numpy(), return_inverse=True)
    matrix = sp.csr_matrix((np.ones(len(frame)), (users, items)), shape=(users.max() + 1, len(item_ids)))
    matrix.data[:] = 1.0  # repeated events count once
    return matrix, item_ids


def scipy_item_cf(path: str, k: int) -> dict[int, list[tuple[int, float]]]:
    matrix, item_ids = user_item_matrix(path)
    activity = np.asarray(matrix.sum(axis=1)).ravel()
    weighted = sp.diags(1.0 / np.sqrt(activity)) @ matrix
    gram = (weighted.T.tocsr() @ weighted).tocsr()
    inverse_norms = 1.0 / np.sqrt(gram.diagonal())
    cosine = (sp.diags(inverse_norms) @ gram @ sp.diags(inverse_norms)).tocsr()
    cosine.setdiag(0.0)
    cosine.eliminate_zeros()
    return {int(item_ids[row]): best_of_row(cosine, row, item_ids, k) for row in range(cosine.shape[0])}


def best_of_row(matrix: sp.csr_matrix, row: int, item_ids: np.ndarray, k: int) -> list[tuple[int, float]]:
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    ids, scores = item_ids[matrix.indices[start:end]], matrix.data[start:end]
    order = np.lexsort((ids, -scores))[:k]
    return list(zip(ids[order].tolist(), scores[order].tolist()))


def scipy_swing(path: str, k: int, swing: Swing) -> int:
    """Single-node Swing with the same formula and caps; returns the number of items with neighbours."""
    matrix, item_ids = user_item_matrix(path)
    activity = np.diff(matrix.indptr)
    high = swing.get("max_items_per_user") or activity.max()
    kept = (activity >= swing.get("min_items_per_user")) & (activity <= high)
    matrix = matrix[kept]
    weights = (swing.get("user_alpha") + activity[kept]) ** -swing.get("user_beta")
    users_of_item = matrix.tocsc()
    rng = np.random.default_rng(swing.get("seed"))
    cap = swing.get("max_users_per_item")
    with_neighbours = 0
    for item in range(matrix.shape[1]):
        users = users_of_item.indices[users_of_item.indptr[item] : users_of_item.indptr[item + 1]]
        if cap is not None and len(users) > cap:
            users = np.sort(rng.choice(users, cap, replace=False))
        if len(users) < 2:
            continue
        columns, scores = swing_scores(matrix[users], weights[users], float(swing.get("alpha")))
        others = columns != item
        order = np.lexsort((item_ids[columns][others], -scores[others]))[:k]
        with_neighbours += len(order) > 0
    return with_neighbours


# -- comparison -------------------------------------------------------------------------------------
def spark_lists(model) -> dict[int, list[tuple[int, float]]]:
    return {
        row[ITEM_ID]: [(entry[ITEM_ID], entry["score"]) for entry in row["neighbours"]]
        for row in model.neighbour_table.collect()
    }


def largest_score_difference(spark_table: dict, scipy_table: dict) -> float:
    """Max |score difference| over rank positions; ∞ when the item sets or list lengths differ."""
    if spark_table.keys() != {item for item, entries in scipy_table.items() if entries}:
        return float("inf")
    worst = 0.0
    for item, entries in spark_table.items():
        expected = scipy_table[item]
        if len(entries) != len(expected):
            return float("inf")
        worst = max(worst, max(abs(a[1] - b[1]) for a, b in zip(entries, expected)))
    return worst


def main() -> None:
    args = parse_args()
    spark = bench_session(master=args.master, app_name="cooccurrence-vs-scipy", driver_memory=args.driver_memory)
    print(f"Spark {spark.version}, master {args.master}, default parallelism {spark.sparkContext.defaultParallelism}")
    path = reference_data(spark, args.users, args.items, args.interactions, args.seed, args.data_dir)
    train = spark.read.parquet(path)
    events = train.count()
    print(f"data: {args.users} users, {args.items} items, {events} interactions (seed {args.seed}), {load_text()}")

    _, cold_cf_s = timed(lambda: fit_and_count(ItemCF(k_neighbours=args.k), train))
    print(f"Spark Item CF, first fit of the session (JVM and Python workers cold): {cold_cf_s:.1f} s, {load_text()}")
    spark_runs, scipy_runs, spark_cpu, scipy_cpu, loads = [], [], [], [], []
    worst = 0.0
    for run in range(1, args.runs + 1):
        (model, rows), spark_cf_s, spark_c = timed_cpu(lambda: fit_and_count(ItemCF(k_neighbours=args.k), train))
        scipy_table, scipy_cf_s, scipy_c = timed_cpu(lambda: scipy_item_cf(path, args.k))
        spark_runs.append(spark_cf_s)
        scipy_runs.append(scipy_cf_s)
        spark_cpu.append(spark_c)
        scipy_cpu.append(scipy_c)
        loads.append(load_average())
        difference = largest_score_difference(spark_lists(model), scipy_table)
        worst = max(worst, difference)
        print(f"run {run}: Spark Item CF fit + materialise {spark_cf_s:.1f} s (CPU {spark_c:.1f} s; {rows} items, "
              f"{model.metadata['item_blocks']} item blocks); scipy {scipy_cf_s:.1f} s (CPU {scipy_c:.1f} s); ratio "
              f"{spark_cf_s / scipy_cf_s:.2f}x; largest score difference {difference:.2e}; {load_text()}")
        model.unpersist()

    swing_s = single_swing_s = None
    if args.with_swing:
        swing = Swing(k_neighbours=args.k, seed=args.seed)
        (_, rows), swing_s = timed(lambda: fit_and_count(swing, train))
        print(f"Spark Swing: fit + materialise {swing_s:.1f} s ({rows} items)")
        if not args.skip_swing_baseline:
            items, single_swing_s = timed(lambda: scipy_swing(path, args.k, swing))
            print(f"single-node Swing (numpy/scipy): {single_swing_s:.1f} s ({items} items)")
            print(f"Swing Spark / single node: {swing_s / single_swing_s:.2f}x")

    spark_median, scipy_median = median(spark_runs), median(scipy_runs)
    ratios = [a / b for a, b in zip(spark_runs, scipy_runs)]
    record("cooccurrence_vs_scipy", {
        "args": vars(args), "events": events, "settings": session_settings(spark), "cold_fit_s": cold_cf_s,
        "spark_s": spark_runs, "scipy_s": scipy_runs, "spark_cpu_s": spark_cpu, "scipy_cpu_s": scipy_cpu,
        "run_loads": loads, "largest_score_difference": worst,
        "swing_s": swing_s, "single_node_swing_s": single_swing_s,
    })
    print(f"Spark Item CF runs: {runs_text(spark_runs)}; scipy runs: {runs_text(scipy_runs)}; per-run ratios "
          f"{runs_text(ratios, 'x')}")
    print(f"CPU seconds (driver + JVM + Python workers), medians: Spark {median(spark_cpu):.1f} s, scipy "
          f"{median(scipy_cpu):.1f} s = {median(spark_cpu) / median(scipy_cpu):.2f}x")
    if worst > 1e-9:
        sys.exit(f"Spark and scipy Item CF disagree (largest score difference {worst:.2e})")
    spark.stop()
    print(f"Item CF Spark median {spark_median:.2f} s / scipy median {scipy_median:.2f} s = {spark_median / scipy_median:.2f}x")


if __name__ == "__main__":
    main()
