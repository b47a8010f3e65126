"""Item CF and Swing on Spark next to the same similarities computed on one node with scipy.

Synthetic power-law interactions shaped like MovieLens-1M by default (6,040 users, 3,706 items, ≈1M events)
are written to parquet first, so neither side's timing includes generating them. Spark times cover
``fit`` (which materialises the neighbour table) plus a count of the table; the single-node times cover
reading the parquet file, the sparse products and the top-k. Item CF is fitted twice on Spark: the first
fit of a session also pays for JVM warm-up and Python worker start-up, the second is the steady state the
ratio uses. The Spark and scipy Item CF tables are compared. The single-node Swing draws its own per-item user sample (numpy, not xxhash64), so only its time
is comparable. The last line is the Item CF ratio.

    SPARK_LOCAL_IP=127.0.0.1 python benchmarks/cooccurrence_vs_scipy.py [--users N --items N --interactions N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spark_retrieval.columns import ITEM_ID, USER_ID
from spark_retrieval.data.synthetic import synthetic_interactions
from spark_retrieval.models.item_cf import ItemCF
from spark_retrieval.models.swing import Swing, swing_scores
from spark_retrieval.session import get_spark


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=3706)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=100, help="neighbours per item")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--skip-swing", action="store_true", help="time Item CF only")
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
    spark = get_spark(master=args.master, app_name="cooccurrence-vs-scipy")
    print(f"Spark {spark.version}, master {args.master}, default parallelism {spark.sparkContext.defaultParallelism}")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "interactions.parquet")
        synthetic_interactions(spark, args.users, args.items, args.interactions, seed=args.seed).write.parquet(path)
        train = spark.read.parquet(path)
        events = train.count()
        print(f"data: {args.users} users, {args.items} items, {events} interactions (seed {args.seed})")

        _, cold_cf_s = timed(lambda: fit_and_count(ItemCF(k_neighbours=args.k), train))
        print(f"Spark Item CF, first fit of the session (JVM and Python workers cold): {cold_cf_s:.1f} s")
        (model, rows), spark_cf_s = timed(lambda: fit_and_count(ItemCF(k_neighbours=args.k), train))
        print(f"Spark Item CF: fit + materialise {spark_cf_s:.1f} s ({rows} items, {model.metadata['item_blocks']} item blocks)")
        scipy_table, scipy_cf_s = timed(lambda: scipy_item_cf(path, args.k))
        print(f"scipy Item CF: {scipy_cf_s:.1f} s")
        print(f"Item CF largest score difference Spark vs scipy: {largest_score_difference(spark_lists(model), scipy_table):.2e}")

        if not args.skip_swing:
            swing = Swing(k_neighbours=args.k, seed=args.seed)
            (_, rows), spark_swing_s = timed(lambda: fit_and_count(swing, train))
            print(f"Spark Swing: fit + materialise {spark_swing_s:.1f} s ({rows} items)")
            if not args.skip_swing_baseline:
                items, single_swing_s = timed(lambda: scipy_swing(path, args.k, swing))
                print(f"single-node Swing (numpy/scipy): {single_swing_s:.1f} s ({items} items)")
                print(f"Swing Spark / single node: {spark_swing_s / single_swing_s:.2f}x")

        print(f"Item CF Spark {spark_cf_s:.1f} s (second fit) / scipy {scipy_cf_s:.1f} s = {spark_cf_s / scipy_cf_s:.2f}x")
    spark.stop()


if __name__ == "__main__":
    main()
