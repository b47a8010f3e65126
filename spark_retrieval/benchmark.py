"""Run every model on one split with one evaluator, and report the table (Markdown, JSON).

The library entry point is ``run_benchmark``; ``spark-retrieval benchmark`` is a thin CLI over it.
"""

from __future__ import annotations

import datetime
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from .channel_analysis import channel_analysis
from .columns import ITEM_ID, USER_ID
from .data.split import temporal_split
from .evaluation import METRICS, catalog_coverage, mean_metrics, per_query_metrics
from .host import cpu_features, cpu_model
from .models.multi_channel import NOT_FITTED, ChannelCache, MultiChannel, MultiChannelModel
from .models.registry import build_estimator, resolve_models
from .progress import SILENT, Progress
from .validation import distinct_integers
from .report import markdown_table, write_report
from .significance import (
    CONFIDENCE,
    DEFAULT_RESAMPLES,
    HEADLINE_METRIC,
    bootstrap_many,
    check_resamples,
)


@dataclass
class BenchmarkResult:
    dataset: str
    k: int
    split: dict[str, int]
    results: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "k": self.k, "split": self.split, "results": self.results, **self.settings}

    def to_markdown(self) -> str:
        return markdown_table(self.results, self.k, self.settings.get("bootstrap"))

    def write(self, output_dir: str) -> None:
        """Write ``results.json``, ``results.md`` and ``results.png`` (each whole or not at all) to a folder or an
        ``s3://`` prefix; see ``report.write_report``."""
        write_report(self.to_json(), output_dir)


def run_benchmark(
    spark: SparkSession,
    ratings,
    dataset: str,
    models: list[str],
    k: int | Sequence[int] = 20,
    holdout: int = 3,
    positive_threshold: float = 2.0,
    seed: int = 0,
    progress: Progress = SILENT,
    bootstrap: int = DEFAULT_RESAMPLES,
    seeds: Sequence[int] | str | None = None,
    tuned: Mapping[str, Mapping[str, Any]] | None = None,
    side: Mapping[str, DataFrame | None] | None = None,
    source: Mapping[str, Any] | None = None,
) -> BenchmarkResult:
    """Split ``ratings`` once, then fit, recommend and evaluate each model on the same split.

    ``k``: the list length, or several (``[20, 100, 200]``): the first is the table's; each row then also has
    ``at_k`` with every metric at the others (each list computed once, at the longest K; merged rows merge per K).
    A merged row (``MultiChannel``) shares its channels' fits and lists with the rows that fit them with the same
    parameters, and adds ``channel_analysis`` (``channel_analysis.channel_analysis``) at each K.

    ``tuned``: per model, ``{"params": …, "score": …}`` chosen on validation (``tuning.read_tuned``): those
    models are fitted with these parameters on the whole train and their rows say ``params_source: tuned``
    and the ``validation_score``; the others keep their defaults (``params_source: defaults``).

    ``bootstrap``: resamples of the 95 % intervals over queries (0: none), drawn with ``seed``; each row then
    also gets a paired comparison against the best row by ``significance.HEADLINE_METRIC`` (recall).
    ``seeds``: the seeds a stochastic row is fitted with (default: ``[seed]``); its plain metrics, its
    intervals and its paired comparison are those of the first seed's fit, ``seed_mean`` / ``seed_std`` the
    spread across all of them. A deterministic row (see ``is_stochastic``) is fitted once, with ``seeds[0]``.
    ``side``: ``item_features`` / ``user_features`` for the models that read them; ``source``: the event log's
    description (``data.event_log``), kept in the results as ``source``.
    """
    ks = parse_ks(k)
    k = ks[0]
    models = resolve_models(models)
    seeds = parse_seeds(seeds) if seeds is not None else [seed]
    bootstrap = check_resamples(bootstrap)
    split = temporal_split(ratings, holdout=holdout, positive_threshold=positive_threshold)
    train = split.train.persist(StorageLevel.MEMORY_AND_DISK)
    test = split.test.persist(StorageLevel.MEMORY_AND_DISK)
    progress(f"splitting {dataset}: last {holdout} events per user held out, positives rated > {positive_threshold}")
    counts = split.counts()
    progress("split: " + ", ".join(f"{key} {value:,}" for key, value in counts.items()))
    split.require_queries(counts, dataset)  # before any model is fitted
    catalog = train.select(ITEM_ID).distinct().persist(StorageLevel.MEMORY_AND_DISK)

    settings: dict[str, Any] = {
        **({"ks": ks} if len(ks) > 1 else {}),
        "holdout": holdout,
        "positive_threshold": positive_threshold,
        "seed": seed,
        "seeds": list(seeds),
    }
    if source:
        settings["source"] = dict(source)
    if bootstrap:
        settings["bootstrap"] = {
            "resamples": bootstrap,
            "seed": seed,
            "confidence": CONFIDENCE,
            "method": "Poisson bootstrap over queries, percentile interval",
            "compared_by": HEADLINE_METRIC,
        }
    result = BenchmarkResult(
        dataset=dataset,
        k=k,
        split=counts,
        settings={
            **settings,
            "spark": {"version": spark.version, "master": spark.sparkContext.master},
            "environment": run_environment(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    side_tables = dict(side or {})
    per_query_of: dict[str, DataFrame] = {}  # each row's per-query metrics, kept for the paired comparisons
    per_query_longer: dict[str, dict[int, DataFrame]] = {}  # the same at the longer K (merged rows vs channels)
    channels = ChannelCache(train, progress)  # fits and lists the merged rows share with the single rows
    list_metrics: list[tuple[DataFrame, dict[int, dict[str, float]]]] = []  # a shared list's metrics per K
    wanted = merged_channel_keys(models, seeds[0], tuned, positive_threshold, side_tables)
    try:
        for name in models:
            chosen = (tuned or {}).get(name)
            params = chosen["params"] if chosen else None
            stochastic = is_stochastic(build_estimator(name, seeds[0], params, positive_threshold, **side_tables), train)
            runs = []
            for index, run_seed in enumerate(seeds if stochastic else seeds[:1]):
                first = index == 0
                estimator = build_estimator(name, run_seed, params, positive_threshold, progress.enabled, **side_tables)
                progress(f"fitting {name}" + (f" (seed {run_seed})" if stochastic and len(seeds) > 1 else ""))
                started = time.perf_counter()
                if isinstance(estimator, MultiChannel):
                    model, fit_seconds = channels.merged_model(estimator)
                else:
                    model = estimator.fit(train)
                    model.materialize()
                    fit_seconds = time.perf_counter() - started
                    if ChannelCache.key(name, estimator) in wanted:
                        channels.offer(name, estimator, model, fit_seconds)
                progress(f"recommending and evaluating {name} (fit {fit_seconds:.1f}s)")
                started = time.perf_counter()
                lists = channels.lists(model, test, max(ks)) if isinstance(model, MultiChannelModel) else None
                at_k: dict[int, DataFrame] = {}
                if lists is not None:  # merged per K: quotas and depth depend on K
                    for each_k in ks:
                        at_k[each_k] = model.merge(lists, each_k).persist(StorageLevel.MEMORY_AND_DISK)
                else:  # every model's top-K is the first K of its longer list (score, then item id)
                    # Persisted: the metrics and the coverage read it, and it is made by a whole retrieval.
                    longest = model.recommend(test, max(ks)).persist(StorageLevel.MEMORY_AND_DISK)
                    if first:  # the merged rows merge this list instead of recommending it again
                        channels.offer_list(model, test, max(ks), longest)
                    at_k = {each_k: longest for each_k in ks}
                recommendations = at_k[k]
                per_query = per_query_metrics(recommendations, test, k)
                if first and bootstrap:
                    per_query = per_query.persist(StorageLevel.MEMORY_AND_DISK)
                    per_query_of[name] = per_query
                metrics = mean_metrics(per_query)  # also fills the persisted per-query rows, before unpersist
                metrics["coverage"] = catalog_coverage(recommendations, catalog, k)
                longer = {}
                for each_k in ks[1:]:
                    per_query_at = per_query_metrics(at_k[each_k], test, each_k)
                    if first and bootstrap:
                        per_query_at = per_query_at.persist(StorageLevel.MEMORY_AND_DISK)
                        per_query_longer.setdefault(name, {})[each_k] = per_query_at
                    longer[each_k] = {
                        **mean_metrics(per_query_at),
                        "coverage": catalog_coverage(at_k[each_k], catalog, each_k),
                    }
                recommend_seconds = time.perf_counter() - started
                at_each_k = {k: metrics, **longer}
                if lists is None and first and channels.holds_list(longest):
                    list_metrics.append((longest, at_each_k))
                analysis: dict[int, dict[str, Any]] = {}
                if lists is not None and first:
                    progress(f"analysing the channels of {name}")
                    known = {channel: by_k for channel, frame in lists.items() for kept, by_k in list_metrics if kept is frame}
                    analysis = {
                        each_k: channel_analysis(
                            lists, test, each_k, merged=at_k[each_k],
                            known={channel: by_k[each_k] for channel, by_k in known.items()},
                            merged_metrics=at_each_k[each_k],
                        )
                        for each_k in ks
                    }
                for frame in {id(f): f for f in at_k.values()}.values():
                    if not channels.holds_list(frame):
                        frame.unpersist()
                if not isinstance(model, MultiChannelModel) and not channels.holds(model):
                    model.unpersist()  # a merged row's channels stay in the cache until the end
                runs.append({"seed": run_seed, **metrics})
                if first:
                    row = {"model": name, **metrics, "fit_seconds": fit_seconds, "recommend_seconds": recommend_seconds}
                    if longer:
                        row["at_k"] = {str(each_k): values for each_k, values in longer.items()}
                    if analysis:
                        row["channel_analysis"] = analysis[k]
                        for each_k in ks[1:]:
                            row["at_k"][str(each_k)]["channel_analysis"] = analysis[each_k]
                    row["params"] = {key: value for key, value in estimator.params_dict().items() if key not in NOT_FITTED}
                    row["params_source"] = "tuned" if chosen else "defaults"
                    if chosen:
                        row["validation_score"] = chosen["score"]
                    if "training" in model.metadata:  # how a trained model was trained: what its numbers depend on
                        training = model.metadata["training"]
                        row["training"] = {
                            key: training.get(key) for key in ("backend", "num_proc", "parameter_hashes", "environment", "seconds")
                        }
                progress(f"{name}: recall@{k} {metrics['recall']:.4f}, ndcg@{k} {metrics['ndcg']:.4f}")
            row.update(seed_summary(runs, stochastic))
            result.results.append(row)
        if bootstrap:
            compare_with_best(result.results, per_query_of, bootstrap, seed, progress, per_query_longer)
    finally:
        channels.release()
        longer_frames = [frame for by_k in per_query_longer.values() for frame in by_k.values()]
        for frame in (train, test, catalog, *per_query_of.values(), *longer_frames):
            frame.unpersist()
    return result


def merged_channel_keys(models, seed: int, tuned, positive_threshold, side: Mapping[str, Any]) -> set:
    """The (channel, parameters) keys the merged rows among ``models`` fit their channels with (first seed)."""
    keys = set()
    for name in models:
        chosen = (tuned or {}).get(name)
        estimator = build_estimator(name, seed, chosen["params"] if chosen else None, positive_threshold, **side)
        if isinstance(estimator, MultiChannel):
            keys |= {ChannelCache.key(channel, each) for channel, each in estimator.channel_estimators().items()}
    return keys


SEEDED_METRICS = (*METRICS, "coverage")
# Estimator class → the parameter whose cap turns its seeded sample on, the column a cap applies per, the column
# it counts. With the cap off, or no group over it in the training data, the seed changes nothing.
SAMPLING_CAPS = {
    "ItemCF": ("max_items_per_user", USER_ID, ITEM_ID),
    "Swing": ("max_users_per_item", ITEM_ID, USER_ID),
}


def is_stochastic(estimator, train: DataFrame) -> bool:
    """Whether the seed can change the fit: the estimator takes a seed and, for Item CF and Swing, their
    seeded sample is active (the cap is set and some user / item in ``train`` exceeds it)."""
    if isinstance(estimator, MultiChannel):
        return any(is_stochastic(channel, train) for channel in estimator.channel_estimators().values())
    if not estimator.hasParam("seed"):
        return False
    cap = SAMPLING_CAPS.get(type(estimator).__name__)
    if cap is None:
        return True
    param, group, counted = cap
    limit = estimator.get(param)
    if limit is None:
        return False
    largest = train.groupBy(group).agg(F.countDistinct(counted).alias("_n")).agg(F.max("_n")).first()[0]
    return largest is not None and largest > limit


def seed_summary(runs: list[dict[str, Any]], stochastic: bool) -> dict[str, Any]:
    """``seeds``: "deterministic" or the seeds fitted; with two seeds or more, ``seed_mean`` and ``seed_std``
    (sample standard deviation, n - 1) per metric and ``seed_runs`` (each seed's metrics)."""
    if not stochastic:
        return {"seeds": "deterministic"}
    summary: dict[str, Any] = {"seeds": [run["seed"] for run in runs]}
    if len(runs) > 1:
        summary["seed_mean"] = {key: statistics.fmean(run[key] for run in runs) for key in SEEDED_METRICS}
        summary["seed_std"] = {key: statistics.stdev(run[key] for run in runs) for key in SEEDED_METRICS}
        summary["seed_runs"] = runs
    return summary


def compare_with_best(
    rows: list[dict[str, Any]],
    per_query_of: dict[str, DataFrame],
    resamples: int,
    seed: int,
    progress: Progress,
    per_query_longer: Mapping[str, Mapping[int, DataFrame]] | None = None,
) -> None:
    """Add ``ci`` to every row (the bootstrap interval of each metric over its queries) and ``vs_best``: the
    paired bootstrap difference, row minus the best row by
    ``HEADLINE_METRIC`` (the first such row on a tie), per metric, on the same queries; and to each merged row
    ``vs_best_channel``: the same against the best of its channels that ran as rows of this benchmark, and at
    each longer K of ``per_query_longer`` (``{model: {K: per-query rows}}``) ``at_k[K]["vs_best_channel"]``
    against the best channel at that K. All of them come from one Spark job."""
    best = max(rows, key=lambda row: row[HEADLINE_METRIC])  # max keeps the first of equal rows
    pairs: dict[tuple, tuple[DataFrame, DataFrame]] = {}  # (row, K or None, baseline) -> per-query frames
    for row in rows:
        if row is best:
            row["vs_best"] = {"baseline": best["model"], "best": True}
        else:
            pairs[(row["model"], None, best["model"])] = (per_query_of[row["model"]], per_query_of[best["model"]])
    by_model = {row["model"]: row for row in rows}
    for row in rows:  # a merged row against the best of its channels that ran as rows: does merging add anything?
        channels = [name for name in (row.get("channel_analysis") or {}).get("channels", ()) if name in by_model]
        if not channels:
            continue
        channel = max(channels, key=lambda name: by_model[name][HEADLINE_METRIC])
        pairs[(row["model"], "channel", channel)] = (per_query_of[row["model"]], per_query_of[channel])
        for each_k, per_query in ((per_query_longer or {}).get(row["model"]) or {}).items():
            channel = max(channels, key=lambda name: by_model[name]["at_k"][str(each_k)][HEADLINE_METRIC])
            pairs[(row["model"], each_k, channel)] = (per_query, per_query_longer[channel][each_k])
    progress(
        f"bootstrap: {len(rows)} interval(s) and {len(pairs)} paired comparison(s) in one job (every row against "
        f"{best['model']}, merged rows against their best channel)"
    )
    intervals, differences = bootstrap_many(
        {row["model"]: per_query_of[row["model"]] for row in rows}, pairs, resamples=resamples, seed=seed
    )
    for row in rows:
        row["ci"] = {key: {"ci_low": v["ci_low"], "ci_high": v["ci_high"]} for key, v in intervals[row["model"]].items()}
    for (model, kind, baseline), values in differences.items():
        row = by_model[model]
        if kind is None:
            row["vs_best"] = {"baseline": baseline, "best": False, **values}
        elif kind == "channel":
            row["vs_best_channel"] = {"baseline": baseline, **values}
        else:
            row["at_k"][str(kind)]["vs_best_channel"] = {"baseline": baseline, **values}


def parse_ks(k: int | Sequence[int] | str) -> list[int]:
    """``20``, ``"20,100,200"`` or ``[20, 100, 200]`` → distinct positive list lengths; the first is the main one."""
    return distinct_integers(k, "k", at_least=1)


def parse_seeds(seeds: Sequence[int] | str) -> list[int]:
    """``"0,1,2"`` or ``[0, 1, 2]`` → distinct integer seeds, in the order given."""
    return distinct_integers(seeds, "seeds")


ENVIRONMENT_VARIABLES = ("ATEN_CPU_CAPABILITY", "SPARK_RETRIEVAL_TORCH_THREADS", "OMP_NUM_THREADS", "MKL_CBWR")


def run_environment() -> dict[str, Any]:
    """What the numbers of a run may depend on besides data, code and seed: library versions, the CPU, the
    variables that steer torch's kernels and threads. Two ``results.json`` compare knowingly with these."""
    import os
    import platform
    from importlib import metadata

    versions = {}
    for package in ("pyspark", "torch", "horovod", "numpy", "pyarrow", "scipy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "versions": versions,
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "variables": {name: os.environ.get(name) for name in ENVIRONMENT_VARIABLES},
    }


def report_benchmark(
    spark: SparkSession,
    ratings: DataFrame,
    dataset: str,
    *,
    output: str | None,
    progress: Progress = SILENT,
    **settings: Any,
) -> BenchmarkResult:
    """``run_benchmark`` (``settings``: its keyword arguments), then the table on stdout and the report written
    to ``output`` when one is given: the CLI's and the benchmark job's whole work once the data is loaded."""
    result = run_benchmark(spark, ratings, dataset=dataset, progress=progress, **settings)
    print(result.to_markdown(), flush=True)
    if output:
        result.write(output)
        progress(f"wrote {output}/results.md, results.json and results.png")
    return result


DEFAULT_POSITIVE_THRESHOLD = 2.0
"""The split's threshold when none is given and the data have ratings (MovieLens: 1–5 stars)."""


@dataclass
class RunData:
    """What a run reads: the interactions, the threshold to split with, the two-tower rows' side inputs
    (``item_features`` / ``user_features`` / ``schema``), an event log's description and its loaded form (id
    indexes; None for MovieLens)."""

    ratings: DataFrame
    positive_threshold: float
    side: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] | None = None
    log: Any = None

    def unpersist(self) -> None:
        if self.log is not None:
            self.log.unpersist()


def open_data(
    spark: SparkSession,
    *,
    dataset: str | None = None,
    path: str | None = None,
    log=None,
    positive_threshold: float | None = None,
    schema: str | None = None,
    progress: Progress = SILENT,
) -> RunData:
    """A MovieLens release (``dataset``, ``path``: its folder, None for the bundled one) or a user's event log
    (``log``: a ``data.event_log.EventLog``, read, checked and indexed; its side tables and ``schema`` go to the
    two-tower rows). ``positive_threshold`` None: ``DEFAULT_POSITIVE_THRESHOLD`` with ratings, none without."""
    if log is None:
        from .data.movielens import load_movielens

        dataset = dataset or "ml-latest-small"
        progress(f"loading {dataset}" + (f" from {path}" if path else ""))
        ratings = load_movielens(spark, dataset, path).ratings
        threshold = DEFAULT_POSITIVE_THRESHOLD if positive_threshold is None else positive_threshold
        return RunData(ratings, threshold)
    from .data.event_log import load_event_log
    from .report import source_line

    progress(f"loading {log.interactions}")
    loaded = load_event_log(spark, log)
    threshold = loaded.positive_threshold(positive_threshold, DEFAULT_POSITIVE_THRESHOLD)
    progress("data: " + source_line(loaded.description))
    side = {"item_features": loaded.item_features, "user_features": loaded.user_features, "schema": schema}
    return RunData(loaded.ratings, threshold, side, loaded.description, loaded)
