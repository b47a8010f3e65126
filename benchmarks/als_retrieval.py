"""ALS retrieval without seen items, ``top_k_inner_product`` vs ``recommendForAllUsers`` + filtering.

Fits Spark's implicit ALS once (untimed) on the MovieLens-1M-shaped reference set by default
(``synthetic_interactions``: 6,040 users, 3,706 items, 1M events, parquet cached under ``--data-dir``;
``--source random`` keeps the older uniform-user random pairs), then times, ``--runs`` times each,
alternating:

* ``ALSModel.recommend_for_users``: exact blocked top-K with the user's train items excluded, and
* ``recommendForAllUsers(k + max seen)`` followed by dropping seen items and keeping the first ``k``,

each computing every row into a no-op sink. It checks both give the same lists (Spark's float32 scores can
order two items whose exact scores differ by less than float32 precision differently; such pairs are counted
apart), and prints the medians and their ratio last.

    .venv/bin/python benchmarks/als_retrieval.py [--runs 3] [--interactions 1M] [--rank 64 --k 20]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from pyspark.ml.recommendation import ALS as SparkALS
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_retrieval.columns import ITEM_ID, RATING, RECOMMENDATIONS, SCORE, USER_ID
from spark_retrieval.models.als import ITEMS, SEEN, ALSModel, factor_tables, seen_items, training_ratings
from _harness import (add_run_options, ML1M_INTERACTIONS, ML1M_ITEMS, ML1M_USERS, bench_session, load_average,
                      load_text, median, parse_size, record, reference_data, runs_text, session_settings,
                      tree_cpu_seconds)

FLOAT32_TIE = 1e-5  # relative score gap below which Spark's float32 scores cannot order two items reliably


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("synthetic", "random"), default="synthetic")
    parser.add_argument("--users", type=int, default=ML1M_USERS)
    parser.add_argument("--items", type=int, default=ML1M_ITEMS)
    parser.add_argument("--interactions", type=parse_size, default=ML1M_INTERACTIONS)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--max-iter", type=int, default=5)
    parser.add_argument("--k", type=int, default=20)
    add_run_options(parser, runs_help="timed runs per method; the medians count")
    return parser.parse_args(argv)


def random_interactions(spark, users: int, items: int, interactions: int, seed: int) -> DataFrame:
    """Distinct (user, item) pairs: users uniform, items Zipf-like, so a few items are very popular."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    user_ids = rng.integers(1, users + 1, size=interactions)
    item_ids = rng.choice(np.arange(1, items + 1), size=interactions, p=popularity / popularity.sum())
    pairs = np.unique(np.stack([user_ids, item_ids], axis=1), axis=0)
    rows = [(int(u), int(i)) for u, i in pairs]
    return spark.createDataFrame(rows, f"{USER_ID} long, {ITEM_ID} long")


def filtered_recommend_for_all_users(spark_model, seen: DataFrame, k: int, max_seen: int) -> DataFrame:
    """The usual workaround: over-fetch ``k + max seen`` per user, drop the seen items, keep ``k``."""
    fetched = spark_model.recommendForAllUsers(k + max_seen).withColumnRenamed(USER_ID, "_user")
    joined = fetched.join(seen, fetched["_user"] == seen[USER_ID], "left")
    unseen = F.filter(
        RECOMMENDATIONS, lambda r: ~F.coalesce(F.array_contains(F.col(ITEMS), r[ITEM_ID].cast("long")), F.lit(False))
    )
    best = F.transform(
        F.slice(unseen, 1, k), lambda r: F.struct(r[ITEM_ID].cast("long").alias(ITEM_ID), r[RATING].cast("double").alias(SCORE))
    )
    return joined.select(F.col("_user").cast("long").alias(USER_ID), best.alias(RECOMMENDATIONS))


def timed_run(make_frame) -> tuple[float, DataFrame, float]:
    """Wall time of building the frame and computing every row (a no-op sink), the frame, and CPU seconds."""
    cpu = tree_cpu_seconds()
    start = time.perf_counter()
    frame = make_frame()
    frame.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start, frame, tree_cpu_seconds() - cpu


def compare_lists(ours: DataFrame, theirs: DataFrame) -> tuple[int, int, int]:
    """``(identical, near-tie reorderings, real differences)`` counted over users."""
    ours_by_user = {r[USER_ID]: r[RECOMMENDATIONS] for r in ours.collect()}
    identical = near_ties = different = 0
    for row in theirs.collect():
        a, b = ours_by_user.get(row[USER_ID], []), row[RECOMMENDATIONS]
        if [e[ITEM_ID] for e in a] == [e[ITEM_ID] for e in b]:
            identical += 1
        elif _same_up_to_near_ties(a, b):
            near_ties += 1
        else:
            different += 1
    return identical, near_ties, different


def _same_up_to_near_ties(ours, theirs) -> bool:
    """Both lists hold items whose exact scores agree within float32 precision, position by position."""
    if len(ours) != len(theirs):
        return False
    for a, b in zip(ours, theirs):
        if abs(a[SCORE] - b[SCORE]) > FLOAT32_TIE * max(1.0, abs(a[SCORE])):
            return False
    return True


def main(argv=None) -> None:
    args = parse_args(argv)
    spark = bench_session(master=args.master, app_name="als-retrieval", driver_memory=args.driver_memory)
    if args.source == "synthetic":
        path = reference_data(spark, args.users, args.items, args.interactions, args.seed, args.data_dir)
        train = spark.read.parquet(path).select(USER_ID, ITEM_ID).cache()
    else:
        train = random_interactions(spark, args.users, args.items, args.interactions, args.seed).cache()
    spark_model = SparkALS(
        rank=args.rank, maxIter=args.max_iter, implicitPrefs=True, alpha=20.0, regParam=0.05, seed=args.seed,
        userCol=USER_ID, itemCol=ITEM_ID, ratingCol=RATING,
    ).fit(training_ratings(train, implicit=True))
    seen = seen_items(train).cache()
    model = ALSModel(tables={**factor_tables(spark_model), SEEN: seen})
    max_seen = seen.agg(F.max(F.size(ITEMS))).first()[0]
    users = train.select(USER_ID).distinct().cache()
    events = train.count()
    print(f"{events} interactions, {users.count()} users, {args.items} items, rank {args.rank}, "
          f"k {args.k}, max seen {max_seen}, {load_text()}")

    timed_run(lambda: model.recommend_for_users(users, args.k))  # warm-up, untimed
    ours_runs, theirs_runs, ours_cpu, theirs_cpu, loads = [], [], [], [], []
    for run in range(1, args.runs + 1):
        ours_time, ours, ours_c = timed_run(lambda: model.recommend_for_users(users, args.k))
        theirs_time, theirs, theirs_c = timed_run(lambda: filtered_recommend_for_all_users(spark_model, seen, args.k, max_seen))
        ours_runs.append(ours_time)
        theirs_runs.append(theirs_time)
        ours_cpu.append(ours_c)
        theirs_cpu.append(theirs_c)
        loads.append(load_average())
        print(f"run {run}: top_k_inner_product {ours_time:.2f} s (CPU {ours_c:.1f} s), recommendForAllUsers"
              f"(k+{max_seen}) + filter {theirs_time:.2f} s (CPU {theirs_c:.1f} s), ratio {theirs_time / ours_time:.2f}; "
              f"{load_text()}")
    identical, near_ties, different = compare_lists(ours, theirs)
    print(f"lists identical for {identical} users; {near_ties} differ only in the order of float32-tied scores; "
          f"{different} differ")
    record("als_retrieval", {"args": vars(args), "events": events, "max_seen": max_seen,
                             "settings": session_settings(spark), "top_k_s": ours_runs,
                             "recommend_for_all_users_s": theirs_runs, "top_k_cpu_s": ours_cpu,
                             "recommend_for_all_users_cpu_s": theirs_cpu, "run_loads": loads,
                             "identical": identical, "near_ties": near_ties, "different": different})
    spark.stop()
    print(f"top_k_inner_product runs: {runs_text(ours_runs)}; recommendForAllUsers + filter runs: {runs_text(theirs_runs)}")
    print(f"CPU seconds (driver + JVM + Python workers), medians: top_k_inner_product {median(ours_cpu):.1f} s, "
          f"recommendForAllUsers + filter {median(theirs_cpu):.1f} s")
    if different:
        sys.exit(f"{different} users got different lists")
    print(f"ratio (recommendForAllUsers+filter median {median(theirs_runs):.2f} s / top_k_inner_product median "
          f"{median(ours_runs):.2f} s): {median(theirs_runs) / median(ours_runs):.2f}")


if __name__ == "__main__":
    main()
