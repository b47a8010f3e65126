"""Which differences are real: bootstrap intervals over queries and paired comparisons, computed on Spark.

Every statistic resamples *queries* (the test set's users), with the Poisson bootstrap: in resample ``b`` the
query ``q`` gets the weight ``w ~ Poisson(1)``, drawn by inverting the Poisson CDF at a uniform derived from
``xxhash64(seed, b, q)``. The weights depend on nothing but (seed, b, query), not on partitioning or row
order, and the same seed gives every model the same weights, so a paired difference resamples the same queries
on both sides (a model against itself: exactly 0, interval [0, 0]). All statistics come from one aggregation:
the per-query frames are pivoted into one row per query (one shuffle), each query row is copied once per
resample (``explode(sequence(-1, B - 1))``; ``b = -1`` is the sample itself, weight 1) and gets its weight
once, and ``groupBy(b)`` sums every statistic's weighted values side by side (a paired difference is a column
difference within the query's row). Only ``B + 1`` rows of sums reach the driver, never the per-query rows.
Each weighted value is rounded once to a whole number of 1e-12 units (``RESAMPLE_UNITS``) and summed as a
long, exactly, so the intervals are the same bytes on any cluster layout (``evaluation.evaluate`` sums at
1e-18 in decimals; whole units in longs cost a third of decimal sums in the B-fold aggregation, and move a
mean by under 1e-12). The long sums fit while a statistic's Σ weight·value stays under 9.2e6 (about 9 million
queries of metrics ≤ 1); beyond, the aggregation returns null and ``ResampleOverflowError`` says so.

The interval is the percentile interval: the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
quantiles (linear interpolation between order statistics) of the ``B`` resampled means
``Σ w·m / Σ w``. A resample in which every weight is 0 (only possible with a handful of queries) is
skipped.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Hashable, Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from .columns import QUERY_ID, require_columns
from .errors import EmptyDataError, InvalidParameterError, UserError
from .evaluation import METRICS

DEFAULT_RESAMPLES = 1000
MIN_RESAMPLES = 20
CONFIDENCE = 0.95
HEADLINE_METRIC = "recall"
"""The metric that picks the best row of a table, against which every row is compared."""

RESAMPLE_UNITS = 10**12
"""weight·value per query and resample is rounded to a whole number of these units (1e-12) and summed as a long."""
_UNIFORM_BITS = 53
_CODEGEN_FIELDS = "spark.sql.codegen.maxFields"


class ResampleOverflowError(UserError, ArithmeticError):
    """A resampled sum does not fit the long it is summed in (see ``RESAMPLE_UNITS``): a run too large for the
    bootstrap, which the user avoids by asking for no intervals (the CLI's ``--bootstrap 0``)."""


def _poisson_cdf() -> tuple[float, ...]:
    """P(X <= k) for X ~ Poisson(1), k = 0, 1, … until it rounds to 1.0 (k = 17; beyond, u < 1 never reaches)."""
    thresholds, term, total, k = [], math.exp(-1.0), 0.0, 0
    while True:
        total += term
        if total >= 1.0:
            return tuple(thresholds)
        thresholds.append(total)
        k += 1
        term /= k


POISSON_CDF = _poisson_cdf()


def uniform(seed: int, resample: Column, query: Column) -> Column:
    """A uniform in [0, 1) from the low 53 bits of ``xxhash64(seed, resample, query)``."""
    hashed = F.xxhash64(F.lit(int(seed)).cast("long"), resample.cast("long"), query)
    return hashed.bitwiseAND(F.lit((1 << _UNIFORM_BITS) - 1).cast("long")).cast("double") / float(1 << _UNIFORM_BITS)


def poisson_weight(seed: int, resample: Column, query: Column) -> Column:
    """``Poisson(1)`` weight of ``query`` in ``resample``: the number of CDF steps the uniform has passed."""
    u = uniform(seed, resample, query)
    weight = F.lit(0)
    for threshold in POISSON_CDF:
        weight = weight + (u >= F.lit(threshold)).cast("int")
    return weight


def check_resamples(resamples: Any) -> int:
    """0 (no intervals) or at least ``MIN_RESAMPLES``."""
    if not isinstance(resamples, int) or isinstance(resamples, bool) or (0 < resamples < MIN_RESAMPLES) or resamples < 0:
        raise InvalidParameterError(
            f"bootstrap resamples must be 0 (no intervals) or an integer >= {MIN_RESAMPLES}, got {resamples!r}"
        )
    return resamples


def _check(resamples: int, confidence: float) -> None:
    if check_resamples(resamples) == 0:
        raise InvalidParameterError("bootstrap intervals need at least one resample")
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise InvalidParameterError(f"confidence must be a float in (0, 1), got {confidence!r}")


def query_table(frames: Sequence[DataFrame], columns: Sequence[str]) -> DataFrame:
    """Lazy: one row per query of any of ``frames`` (one shuffle): ``query_id`` and, per frame ``i``,
    ``{i}_present`` (true where the frame holds the query, null elsewhere) and ``{i}_{column}`` per column."""
    parts = []
    for index, frame in enumerate(frames):
        require_columns(frame, (QUERY_ID, *columns), "per-query metrics")
        parts.append(frame.select(QUERY_ID, F.lit(index).alias("_frame"), *columns))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    return union.groupBy(QUERY_ID).pivot("_frame", list(range(len(frames)))).agg(
        F.first(F.lit(True)).alias("present"), *[F.first(name).alias(name) for name in columns]
    )


def resampled_sums(
    table: DataFrame, statistics: Sequence[tuple[int, ...]], columns: Sequence[str], resamples: int, seed: int
) -> DataFrame:
    """Lazy: one row per resample ``_b`` in ``-1 .. resamples - 1`` of ``table`` (``query_table``'s rows);
    per statistic ``s``, ``(i,)`` (frame ``i``'s values) or ``(i, j)`` (frame ``i`` minus frame ``j`` on the
    queries both hold), ``_w{s}`` = Σ weights and, per column, ``_{s}_{column}`` = the exact Σ weight·value in
    ``RESAMPLE_UNITS`` (null when it overflows a long). ``_b = -1`` weighs every query 1 (the sample's own
    sums). Each query's weight is drawn once per resample, whatever the number of statistics."""
    exploded = table.select("*", F.explode(F.sequence(F.lit(-1), F.lit(resamples - 1))).alias("_b"))
    weight = F.when(F.col("_b") < 0, F.lit(1)).otherwise(poisson_weight(seed, F.col("_b"), F.col(QUERY_ID)))
    weighted = exploded.select("*", weight.alias("_w")).where(F.col("_w") > 0)
    sums = []
    for number, frames in enumerate(statistics):
        present = F.col(f"{frames[0]}_present").isNotNull()
        for other in frames[1:]:
            present = present & F.col(f"{other}_present").isNotNull()
        sums.append(F.sum(F.when(present, F.col("_w").cast("long"))).alias(f"_w{number}"))
        for name in columns:
            value = F.col(f"{frames[0]}_{name}")
            for other in frames[1:]:
                value = value - F.col(f"{other}_{name}")
            units = F.rint(value * F.col("_w") * float(RESAMPLE_UNITS)).cast("long")
            sums.append(F.try_sum(F.when(present, units)).alias(f"_{number}_{name}"))
    return weighted.groupBy("_b").agg(*sums)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values``, interpolating linearly between order statistics (numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def _means(
    frames: Sequence[DataFrame], statistics: Sequence[tuple[int, ...]], columns: Sequence[str], resamples: int, seed: int
) -> list[tuple[dict, list[dict]] | None]:
    """Per statistic (see ``resampled_sums``), from one aggregation: (the sample's means and query count, the
    resamples' means in resample order), or None where the statistic has no query; only ``resamples + 1``
    rows reach the driver."""
    spark = frames[0].sparkSession
    # Whole-stage code generation stops at 100 fields per operator by default; this aggregation's partial
    # sums have up to 2 fields (try_sum's sum and flag) per column and statistic, and interpreted they run
    # about twice as slow. Results do not depend on it.
    previous = spark.conf.get(_CODEGEN_FIELDS, None)
    widest = 3 + 2 * (1 + len(columns)) * max(len(frames), len(statistics))
    spark.conf.set(_CODEGEN_FIELDS, str(max(100, widest)))
    try:
        rows = resampled_sums(query_table(frames, columns), statistics, columns, resamples, seed).collect()
    finally:
        if previous is None:
            spark.conf.unset(_CODEGEN_FIELDS)
        else:
            spark.conf.set(_CODEGEN_FIELDS, previous)
    rows.sort(key=lambda row: row["_b"])
    results: list[tuple[dict, list[dict]] | None] = []
    for number in range(len(statistics)):
        sample, draws = None, []
        for row in rows:
            weights = row[f"_w{number}"]
            if not weights:  # no query of this statistic drawn in this resample: skipped
                continue
            if any(row[f"_{number}_{name}"] is None for name in columns):
                raise ResampleOverflowError(
                    "bootstrap sums overflow a long at 1e-12 resolution: a statistic's Σ weight·value passed "
                    "9.2e6 (too many queries, or metric values far above 1); run without intervals (--bootstrap 0)"
                )
            means = {name: float(Decimal(row[f"_{number}_{name}"]) / RESAMPLE_UNITS / weights) for name in columns}
            if row["_b"] < 0:
                sample = {**means, "queries": int(weights)}
            else:
                draws.append(means)
        results.append(None if sample is None else (sample, draws))
    return results


def _interval(draws: list[dict], name: str, confidence: float) -> tuple[float, float]:
    values = [draw[name] for draw in draws]
    alpha = (1.0 - confidence) / 2.0
    return percentile(values, alpha), percentile(values, 1.0 - alpha)


def bootstrap_intervals(
    per_query: DataFrame,
    metrics: Sequence[str] = METRICS,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "ci_low", "ci_high"}}``: each metric's mean over the queries of ``per_query`` (one
    row per ``query_id``, as ``evaluation.per_query_metrics`` gives) and its bootstrap interval."""
    return bootstrap_many({0: per_query}, {}, metrics, resamples, seed, confidence)[0][0]


def paired_differences(
    per_query: DataFrame,
    baseline: DataFrame,
    metrics: Sequence[str] = METRICS,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict[str, dict[str, Any]]:
    """``{metric: {"difference", "ci_low", "ci_high", "excludes_zero"}}`` of ``per_query`` minus ``baseline``
    on the queries both hold (joined on ``query_id``): the mean per-query difference and its paired bootstrap
    interval (the same weights on both sides). ``excludes_zero``: the interval lies strictly on one side of 0."""
    return paired_differences_many({0: (per_query, baseline)}, metrics, resamples, seed, confidence)[0]


def paired_differences_many(
    pairs: Mapping[Hashable, tuple[DataFrame, DataFrame]],
    metrics: Sequence[str] = METRICS,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict[Hashable, dict[str, dict[str, Any]]]:
    """``paired_differences`` of every ``{label: (per_query, baseline)}`` pair, in one Spark aggregation."""
    return bootstrap_many({}, pairs, metrics, resamples, seed, confidence)[1]


def bootstrap_many(
    samples: Mapping[Hashable, DataFrame],
    pairs: Mapping[Hashable, tuple[DataFrame, DataFrame]],
    metrics: Sequence[str] = METRICS,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[dict[Hashable, dict[str, dict[str, float]]], dict[Hashable, dict[str, dict[str, Any]]]]:
    """(``bootstrap_intervals`` of every ``{label: per_query}`` sample, ``paired_differences`` of every
    ``{label: (per_query, baseline)}`` pair), all from one Spark aggregation over their union (one job instead
    of one per statistic). The same numbers, to the bit, as one call per statistic: a query's weights depend
    only on (seed, resample, query) and the sums are exact."""
    _check(resamples, confidence)
    if not samples and not pairs:
        return {}, {}
    frames: list[DataFrame] = []  # each distinct DataFrame once: a row's frame serves its interval and its pairs
    position: dict[int, int] = {}

    def frame_index(frame: DataFrame, what: str) -> int:
        require_columns(frame, (QUERY_ID, *metrics), what)
        if id(frame) not in position:
            position[id(frame)] = len(frames)
            frames.append(frame)
        return position[id(frame)]

    statistics = [(frame_index(frame, "per-query metrics"),) for frame in samples.values()]
    for per_query, baseline in pairs.values():
        statistics.append((frame_index(per_query, "per-query metrics"), frame_index(baseline, "baseline per-query metrics")))
    means = _means(frames, statistics, list(metrics), resamples, seed)
    intervals = {}
    for label, found in zip(samples, means):
        if found is None:
            raise EmptyDataError(f"no queries to bootstrap over ({label})")
        sample, draws = found
        intervals[label] = {}
        for name in metrics:
            low, high = _interval(draws, name, confidence)
            intervals[label][name] = {"value": sample[name], "ci_low": low, "ci_high": high}
    differences = {}
    for label, found in zip(pairs, means[len(samples):]):
        if found is None:
            raise EmptyDataError(f"no queries to bootstrap over ({label} and its baseline share none)")
        sample, draws = found
        result = {}
        for name in metrics:
            low, high = _interval(draws, name, confidence)
            result[name] = {
                "difference": sample[name],
                "ci_low": low,
                "ci_high": high,
                "excludes_zero": bool(low > 0.0 or high < 0.0),
            }
        differences[label] = result
    return intervals, differences
