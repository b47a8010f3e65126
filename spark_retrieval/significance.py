"""Which differences are real: bootstrap intervals over queries and paired comparisons, computed on Spark.

Every statistic resamples *queries* (the test set's users), with the Poisson bootstrap: in resample ``b`` the
query ``q`` gets the weight ``w ~ Poisson(1)``, drawn by inverting the Poisson CDF at a uniform derived from
``xxhash64(seed, b, q)``. The weights depend on nothing but (seed, b, query), not on partitioning or row
order, and the same seed gives every model the same weights, so a paired difference resamples the same
queries on both sides (a model against itself: exactly 0, interval [0, 0]). All resamples are one
aggregation (``explode(sequence(-1, B - 1))`` then ``groupBy(b)``; ``b = -1`` is the sample itself, weight
1): only ``B + 1`` rows of weighted sums (per pair, for several paired comparisons at once) reach the
driver, never the per-query rows. Each weighted value is
rounded once to a whole number of 1e-12 units (``RESAMPLE_UNITS``) and summed as a long, exactly, so the
intervals are the same bytes on any cluster layout (``evaluation.evaluate`` sums at 1e-18 in decimals; whole
units in longs cost a third of decimal sums in the B-fold aggregation, and move a mean by under 1e-12). The
long sums fit while a statistic's Σ weight·value stays under 9.2e6 (about 9 million queries of metrics
≤ 1); beyond, the aggregation returns null and ``ResampleOverflowError`` says so.

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


def resampled_sums(
    frame: DataFrame, columns: Sequence[str], resamples: int, seed: int, keys: Sequence[str] = ()
) -> DataFrame:
    """Lazy: one row per resample ``_b`` in ``-1 .. resamples - 1`` (and per value of the ``keys`` columns)
    with ``_w`` = Σ weights and, per column, the exact Σ weight·value in ``RESAMPLE_UNITS`` (null when it
    overflows a long). ``_b = -1`` weighs every query 1 (the sample's own sums)."""
    require_columns(frame, (QUERY_ID, *keys, *columns), "per-query metrics")
    exploded = frame.select(
        QUERY_ID, *keys, *columns, F.explode(F.sequence(F.lit(-1), F.lit(resamples - 1))).alias("_b")
    )
    weight = F.when(F.col("_b") < 0, F.lit(1)).otherwise(poisson_weight(seed, F.col("_b"), F.col(QUERY_ID)))
    weighted = exploded.select(*keys, "_b", weight.alias("_w"), *columns).where(F.col("_w") > 0)
    return weighted.groupBy(*keys, "_b").agg(
        F.sum(F.col("_w").cast("long")).alias("_w"),
        *[
            F.try_sum(F.rint(F.col(name) * F.col("_w") * float(RESAMPLE_UNITS)).cast("long")).alias(name)
            for name in columns
        ],
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values``, interpolating linearly between order statistics (numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def _means_by(
    frame: DataFrame, columns: Sequence[str], resamples: int, seed: int, key: str | None = None
) -> dict[Any, tuple[dict, list[dict]]]:
    """Per value of the ``key`` column (``{None: …}`` without one), from one aggregation: (the sample's means and
    query count, the resamples' means); only these rows reach the driver."""
    keys = [key] if key else []
    rows = resampled_sums(frame, columns, resamples, seed, keys).collect()  # (resamples + 1) per key value
    samples: dict[Any, dict] = {}
    draws: dict[Any, list] = {}
    for row in rows:
        group = row[key] if key else None
        if any(row[name] is None for name in columns):
            raise ResampleOverflowError(
                "bootstrap sums overflow a long at 1e-12 resolution: a statistic's Σ weight·value passed 9.2e6 "
                "(too many queries, or metric values far above 1); run without intervals (--bootstrap 0)"
            )
        means = {name: float(Decimal(row[name]) / RESAMPLE_UNITS / row["_w"]) for name in columns}
        if row["_b"] < 0:
            samples[group] = {**means, "queries": int(row["_w"])}
        else:
            draws.setdefault(group, []).append((row["_b"], means))
    if not samples or set(draws) - set(samples):
        raise EmptyDataError("no queries to bootstrap over")
    return {
        group: (sample, [means for _, means in sorted(draws.get(group, []), key=lambda draw: draw[0])])
        for group, sample in samples.items()
    }


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
    parts = []
    sample_labels, pair_labels = list(samples), list(pairs)
    for index, label in enumerate(sample_labels):
        per_query = samples[label]
        require_columns(per_query, (QUERY_ID, *metrics), "per-query metrics")
        parts.append(per_query.select(F.lit(index).alias("_part"), QUERY_ID, *metrics))
    for index, label in enumerate(pair_labels, start=len(sample_labels)):
        per_query, baseline = pairs[label]
        require_columns(baseline, (QUERY_ID, *metrics), "baseline per-query metrics")
        require_columns(per_query, (QUERY_ID, *metrics), "per-query metrics")
        ours = per_query.select(QUERY_ID, *[F.col(name).alias(f"_a_{name}") for name in metrics])
        theirs = baseline.select(QUERY_ID, *[F.col(name).alias(f"_b_{name}") for name in metrics])
        parts.append(ours.join(theirs, QUERY_ID, "inner").select(
            F.lit(index).alias("_part"),
            QUERY_ID,
            *[(F.col(f"_a_{name}") - F.col(f"_b_{name}")).alias(name) for name in metrics],
        ))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    means = _means_by(union, list(metrics), resamples, seed, key="_part")
    intervals = {}
    for index, label in enumerate(sample_labels):
        if index not in means:
            raise EmptyDataError(f"no queries to bootstrap over ({label})")
        sample, draws = means[index]
        intervals[label] = {}
        for name in metrics:
            low, high = _interval(draws, name, confidence)
            intervals[label][name] = {"value": sample[name], "ci_low": low, "ci_high": high}
    differences = {}
    for index, label in enumerate(pair_labels, start=len(sample_labels)):
        if index not in means:
            raise EmptyDataError(f"no queries to bootstrap over ({label} and its baseline share none)")
        sample, draws = means[index]
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
