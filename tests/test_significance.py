"""Bootstrap intervals over queries and paired comparisons (spark_retrieval.significance), and their use in
the benchmark: intervals per row, ``vs_best``, ``--seeds``."""

import json
import math
import random

import pytest
from pyspark.sql import functions as F
from pyspark.sql.classic.dataframe import DataFrame  # the class a local session's frames are

from spark_retrieval.benchmark import is_stochastic, parse_seeds, run_benchmark
from spark_retrieval.columns import QUERY_ID, USER_ID
from spark_retrieval.data.movielens import load_movielens
from spark_retrieval.data.split import temporal_split
from spark_retrieval.errors import InvalidParameterError
from spark_retrieval.evaluation import METRICS
from spark_retrieval.models.registry import MODELS, RegisteredModel, build_estimator
from spark_retrieval.significance import (
    POISSON_CDF,
    bootstrap_intervals,
    ResampleOverflowError,
    bootstrap_many,
    check_resamples,
    paired_differences,
    paired_differences_many,
    percentile,
)

QUERIES = 2000
HITS = 500  # p = 0.25, as Recall@20 on ml-100k
WALL_CLOCK = ("fit_seconds", "recommend_seconds", "created")


def hit_frame(spark, seed=1, queries=QUERIES, hits=HITS):
    rng = random.Random(seed)
    vector = [1.0] * hits + [0.0] * (queries - hits)
    rng.shuffle(vector)
    rows = [(q * 7 + 3, v, v * 0.5) for q, v in enumerate(vector)]  # sparse ids: the weights hash the id
    return spark.createDataFrame(rows, f"{QUERY_ID} long, hit_rate double, ndcg double")


def test_poisson_cdf_thresholds():
    assert POISSON_CDF[0] == pytest.approx(math.exp(-1)) and POISSON_CDF[1] == pytest.approx(2 * math.exp(-1))
    assert all(a < b < 1.0 for a, b in zip(POISSON_CDF, POISSON_CDF[1:]))


def test_weights_have_poisson_one_moments(spark):
    from spark_retrieval.significance import poisson_weight

    frame = spark.range(20000).select(poisson_weight(3, F.lit(5), F.col("id")).alias("w"))
    row = frame.agg(F.mean("w").alias("mean"), F.variance("w").alias("var"), F.mean((F.col("w") == 0).cast("double")).alias("zero")).first()
    # 20,000 draws: standard errors ~0.007 (mean), ~0.01 (variance), ~0.0034 (P(0) = e^-1).
    assert row["mean"] == pytest.approx(1.0, abs=0.03)
    assert row["var"] == pytest.approx(1.0, abs=0.05)
    assert row["zero"] == pytest.approx(math.exp(-1), abs=0.015)


def test_bootstrap_interval_matches_the_binomial_interval(spark):
    """2,000 queries, 500 hits: the Wald interval is 0.25 ± 1.96·sqrt(0.25·0.75/2000) = 0.25 ± 0.0190. The
    1,000-resample percentile interval's endpoints lie within 0.003 of it (Monte Carlo error of a 2.5 %
    quantile of 1,000 draws is ~0.0012 here; the tolerance is ~2.5 of those, 16 % of the half-width)."""
    result = bootstrap_intervals(hit_frame(spark), metrics=("hit_rate",), resamples=1000, seed=0)["hit_rate"]
    p = HITS / QUERIES
    half = 1.959964 * math.sqrt(p * (1 - p) / QUERIES)
    assert result["value"] == p
    assert result["ci_low"] == pytest.approx(p - half, abs=0.003)
    assert result["ci_high"] == pytest.approx(p + half, abs=0.003)
    assert result["ci_low"] < p < result["ci_high"]


def test_sums_past_a_longs_range_fail_with_one_clear_error_not_a_wrong_interval(spark):
    # 200 queries of value 1e5: Σ weight·value·1e12 ≈ 2e19, past a long's 9.2e18.
    frame = spark.range(200).select(F.col("id").alias(QUERY_ID), F.lit(1e5).alias("hit_rate"))
    with pytest.raises(ResampleOverflowError, match="overflow a long at 1e-12 resolution"):
        bootstrap_intervals(frame, metrics=("hit_rate",), resamples=20, seed=0)
    small = bootstrap_intervals(frame.limit(20), metrics=("hit_rate",), resamples=20, seed=0)["hit_rate"]
    assert small == {"value": 1e5, "ci_low": 1e5, "ci_high": 1e5}


def test_model_against_itself_differs_by_exactly_zero(spark):
    frame = hit_frame(spark)
    copy = hit_frame(spark)  # the same values built again: another DataFrame, another plan
    for baseline in (frame, copy):
        result = paired_differences(frame, baseline, metrics=("hit_rate", "ndcg"), resamples=50, seed=4)
        for name in ("hit_rate", "ndcg"):
            assert result[name] == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "excludes_zero": False}


def test_paired_difference_sees_a_real_gap_and_not_a_fake_one(spark):
    base = hit_frame(spark, seed=1)
    # The first 240 queries all hit (~180 misses turned into hits, ~+0.09); every other query is equal.
    better = base.withColumn("hit_rate", F.when((F.col(QUERY_ID) % 7 == 3) & (F.col(QUERY_ID) < 7 * 240), 1.0).otherwise(F.col("hit_rate")))
    gain = better.agg(F.mean("hit_rate")).first()[0] - HITS / QUERIES
    result = paired_differences(better, base, metrics=("hit_rate",), resamples=200, seed=0)["hit_rate"]
    assert result["difference"] == pytest.approx(gain) and gain > 0.02
    assert 0 < result["ci_low"] < gain < result["ci_high"] and result["excludes_zero"]
    # Another sample of the same rate: unpaired noise only, the interval holds 0.
    other = hit_frame(spark, seed=2)
    result = paired_differences(other, base, metrics=("hit_rate",), resamples=200, seed=0)["hit_rate"]
    assert result["difference"] == 0.0 and not result["excludes_zero"]


def test_paired_differences_many_equal_one_call_per_pair(spark):
    base = hit_frame(spark, seed=1)
    other = hit_frame(spark, seed=2)
    subset = hit_frame(spark, seed=3).where(F.col(QUERY_ID) % 2 == 1)  # shares half the queries
    pairs = {"other": (other, base), "subset": (subset, base), "self": (base, base)}
    together = paired_differences_many(pairs, metrics=("hit_rate", "ndcg"), resamples=60, seed=5)
    assert list(together) == list(pairs)
    for label, (frame, baseline) in pairs.items():
        alone = paired_differences(frame, baseline, metrics=("hit_rate", "ndcg"), resamples=60, seed=5)
        assert json.dumps(together[label]) == json.dumps(alone)  # to the bit
    assert together["subset"] != together["other"]


def test_intervals_and_paired_differences_in_one_job_equal_one_call_each(spark):
    base, other = hit_frame(spark, seed=1), hit_frame(spark, seed=2)
    metrics = ("hit_rate", "ndcg")
    intervals, differences = bootstrap_many(
        {"base": base, "other": other}, {"other - base": (other, base)}, metrics=metrics, resamples=60, seed=5
    )
    for label, frame in (("base", base), ("other", other)):
        assert json.dumps(intervals[label]) == json.dumps(bootstrap_intervals(frame, metrics=metrics, resamples=60, seed=5))
    alone = paired_differences(other, base, metrics=metrics, resamples=60, seed=5)
    assert json.dumps(differences["other - base"]) == json.dumps(alone)
    assert intervals["base"] != intervals["other"]


def test_the_sessions_codegen_setting_is_left_as_it_was(spark):
    """The aggregation raises Spark's whole-stage codegen field limit for its own job only."""
    key = "spark.sql.codegen.maxFields"
    frame = hit_frame(spark)
    spark.conf.set(key, "150")
    try:
        bootstrap_intervals(frame, metrics=("hit_rate",), resamples=20, seed=0)
        assert spark.conf.get(key) == "150"
    finally:
        spark.conf.unset(key)
    bootstrap_intervals(frame, metrics=("hit_rate",), resamples=20, seed=0)
    assert spark.conf.get(key) == "100"  # Spark's default, not a value the call left behind


def test_same_seed_same_bytes_other_seed_other_interval(spark):
    frame = hit_frame(spark)
    first = json.dumps(bootstrap_intervals(frame, metrics=("hit_rate", "ndcg"), resamples=100, seed=11))
    again = json.dumps(bootstrap_intervals(frame.repartition(3), metrics=("hit_rate", "ndcg"), resamples=100, seed=11))
    other = json.dumps(bootstrap_intervals(frame, metrics=("hit_rate", "ndcg"), resamples=100, seed=12))
    assert first == again  # partitioning does not matter: weights hash (seed, b, query), sums are exact
    assert first != other


def test_percentile_and_argument_checks():
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0], 0.0) == 1.0 and percentile([1.0, 2.0], 1.0) == 2.0
    assert check_resamples(0) == 0 and check_resamples(1000) == 1000
    for bad in (-1, 5, 1.5, True, "100"):
        with pytest.raises(InvalidParameterError, match="bootstrap resamples"):
            check_resamples(bad)
    assert parse_seeds("0, 1,2") == [0, 1, 2] and parse_seeds([5]) == [5]
    for bad in ("", "0,a", "1,1", [], [0.5]):
        with pytest.raises(InvalidParameterError, match="seeds"):
            parse_seeds(bad)


@pytest.fixture(scope="module")
def bundled(spark):
    """The first 80 users of the bundled ml-latest-small: ~200 queries, seconds per model."""
    ratings = load_movielens(spark, "ml-latest-small").ratings
    return ratings.where(F.col(USER_ID) <= 80).cache()


def test_is_stochastic_follows_the_seed_and_the_sampling_caps(spark, bundled):
    train = temporal_split(bundled, holdout=3, positive_threshold=2.0).train
    assert not is_stochastic(build_estimator("global_hot"), train)
    assert is_stochastic(build_estimator("als"), train)
    assert not is_stochastic(build_estimator("item_cf"), train)  # no cap: no sample
    assert is_stochastic(build_estimator("item_cf", params={"max_items_per_user": 20}), train)
    assert not is_stochastic(build_estimator("item_cf", params={"max_items_per_user": 100000}), train)  # never reached
    assert not is_stochastic(build_estimator("swing"), train)  # cap 1000 users per item: 80 users never reach it
    assert is_stochastic(build_estimator("swing", params={"max_users_per_item": 10}), train)


def without_wall_clock(result) -> str:
    document = result.to_json()
    document = {key: value for key, value in document.items() if key not in WALL_CLOCK}
    document["results"] = [{key: value for key, value in row.items() if key not in WALL_CLOCK} for row in document["results"]]
    return json.dumps(document, indent=2)


@pytest.mark.slow
def test_benchmark_intervals_without_per_query_rows_on_the_driver(spark, bundled, monkeypatch):
    """Intervals, paired comparisons and seeds on the bundled data, twice with the same seeds: the same JSON.
    The benchmark computes its intervals and comparisons (three intervals, two comparisons) in one job whose
    collect returns ``resamples + 1`` rows, one per resample with every statistic's sums, fewer than the
    queries, and nothing is pulled with toPandas / toLocalIterator
    (the models' own small collects, Item CF's per-item norms, are not the statistics' business)."""
    import spark_retrieval.benchmark as benchmark

    resamples = 40
    collected, active = [], []
    original_collect = DataFrame.collect

    def counting_collect(self):
        rows = original_collect(self)
        if active:
            collected.append(len(rows))
        return rows

    def refusing(method):
        def call(self, *args, **kwargs):
            assert not active, "per-query rows pulled to the driver"
            return method(self, *args, **kwargs)

        return call

    def guarded(function):
        def call(*args, **kwargs):
            active.append(function.__name__)
            try:
                return function(*args, **kwargs)
            finally:
                active.pop()

        return call

    monkeypatch.setattr(DataFrame, "collect", counting_collect)
    monkeypatch.setattr(DataFrame, "toPandas", refusing(DataFrame.toPandas))
    monkeypatch.setattr(DataFrame, "toLocalIterator", refusing(DataFrame.toLocalIterator))
    monkeypatch.setattr(benchmark, "bootstrap_many", guarded(benchmark.bootstrap_many))
    # A small ALS (the registry's is rank 64, 15 iterations): the stochastic row, fitted once per seed.
    monkeypatch.setitem(MODELS, "als", RegisteredModel("als", "spark_retrieval.models.als:ALS", {"rank": 8, "max_iter": 3}))
    models = ["global_hot", "item_cf", "als"]
    runs = [
        run_benchmark(spark, bundled, "ml-latest-small", models=models, k=10, seed=3, seeds=[0, 1], bootstrap=resamples)
        for _ in range(2)
    ]
    monkeypatch.undo()
    assert len(collected) == 2  # per run one job: the three rows' intervals and the two paired comparisons
    queries = runs[0].results[0]["queries"]
    assert collected == [resamples + 1] * 2 and queries > resamples + 1
    assert without_wall_clock(runs[0]) == without_wall_clock(runs[1])

    document = runs[0].to_json()
    assert document["bootstrap"]["resamples"] == resamples and document["seeds"] == [0, 1]
    rows = {row["model"]: row for row in document["results"]}
    for row in rows.values():
        assert set(row["ci"]) == set(METRICS)
        for name in METRICS:
            assert row["ci"][name]["ci_low"] <= row[name] <= row["ci"][name]["ci_high"]
    assert rows["global_hot"]["seeds"] == "deterministic" and rows["item_cf"]["seeds"] == "deterministic"
    als = rows["als"]
    assert als["seeds"] == [0, 1] and [run["seed"] for run in als["seed_runs"]] == [0, 1]
    assert als["recall"] == als["seed_runs"][0]["recall"]  # the plain metrics and intervals: the first seed's fit
    assert als["seed_mean"]["recall"] == pytest.approx((als["seed_runs"][0]["recall"] + als["seed_runs"][1]["recall"]) / 2)
    assert als["seed_std"]["recall"] >= 0
    best = max(document["results"], key=lambda row: row["recall"])
    assert best["vs_best"] == {"baseline": best["model"], "best": True}
    for row in document["results"]:
        if row is not best:
            paired = row["vs_best"]["recall"]
            assert row["vs_best"]["baseline"] == best["model"] and not row["vs_best"]["best"]
            assert paired["difference"] == pytest.approx(row["recall"] - best["recall"], abs=1e-9)
            assert paired["ci_low"] <= paired["difference"] <= paired["ci_high"]
    table = runs[0].to_markdown()
    assert " ± " in table and "| best |" in table and "deterministic" in table and "(2 seeds)" in table
    assert "Real differences (interval excludes 0)" in table
