"""Benchmark: ALS retrieval without seen items, ``top_k_inner_product`` vs ``recommendForAllUsers`` + filtering.

Fits Spark's implicit ALS once on random ml-100k-shaped interactions (popularity-skewed), then times

* ``ALSModel.recommend_for_users``: exact blocked top-K with the user's train items excluded, and
* ``recommendForAllUsers(k + max seen)`` followed by dropping seen items and keeping the first ``k``,

checks both give the same lists, and prints both times and their ratio last.

    python benchmarks/als_retrieval.py [--users 943 --items 1682 --interactions 100000 --rank 64 --k 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from pyspark.ml.recommendation import ALS as SparkALS
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_retrieval.columns import ITEM_ID, RATING, RECOMMENDATIONS, SCORE, USER_ID
from spark_retrieval.models.als import ITEMS, SEEN, ALSModel, factor_tables, seen_items, training_ratings
from spark_retrieval.session import get_spark

FLOAT32_TIE = 1e-5  # relative score gap below which Spark's float32 scores cannot order two items reliably


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=943)
    parser.add_argument("--items", type=int, default=1682)
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--max-iter", type=int, default=5)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method; the fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--master", default=None)
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


def fastest_run(make_frame, repeats: int) -> tuple[float, DataFrame]:
    """Best wall time of building the frame and computing every row (a no-op sink), over ``repeats`` runs."""
    best, frame = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        frame = make_frame()
        frame.write.format("noop").mode("overwrite").save()
        best = min(best, time.perf_counter() - start)
    return best, frame


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
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = get_spark(master=args.master)
    train = random_interactions(spark, args.users, args.items, args.interactions, args.seed).cache()
    spark_model = SparkALS(
        rank=args.rank, maxIter=args.max_iter, implicitPrefs=True, alpha=20.0, regParam=0.05, seed=args.seed,
        userCol=USER_ID, itemCol=ITEM_ID, ratingCol=RATING,
    ).fit(training_ratings(train, implicit=True))
    seen = seen_items(train).cache()
    model = ALSModel(tables={**factor_tables(spark_model), SEEN: seen})
    max_seen = seen.agg(F.max(F.size(ITEMS))).first()[0]
    users = train.select(USER_ID).distinct().cache()
    print(f"{train.count()} interactions, {users.count()} users, {args.items} items, rank {args.rank}, "
          f"k {args.k}, max seen {max_seen}")

    ours_time, ours = fastest_run(lambda: model.recommend_for_users(users, args.k), args.repeats)
    theirs_time, theirs = fastest_run(
        lambda: filtered_recommend_for_all_users(spark_model, seen, args.k, max_seen), args.repeats
    )
    identical, near_ties, different = compare_lists(ours, theirs)
    print(f"lists identical for {identical} users; {near_ties} differ only in the order of float32-tied scores; "
          f"{different} differ")
    print(f"top_k_inner_product:                  {ours_time:.2f} s")
    print(f"recommendForAllUsers(k+{max_seen}) + filter: {theirs_time:.2f} s")
    print(f"ratio (recommendForAllUsers+filter / top_k_inner_product): {theirs_time / ours_time:.2f}")
    if different:
        sys.exit(f"{different} users got different lists")


if __name__ == "__main__":
    main()
