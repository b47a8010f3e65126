"""Run every model on one split with one evaluator, and report the table (Markdown, JSON).

The library entry point is ``run_benchmark``; ``spark-retrieval benchmark`` is a thin CLI over it.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import SparkSession

from .columns import ITEM_ID
from .data.split import temporal_split
from .errors import InvalidParameterError
from .evaluation import evaluate
from .models.registry import build_estimator, resolve_models
from .progress import SILENT, Progress
from .report import markdown_table, write_report


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
        return markdown_table(self.results, self.k)

    def write(self, output_dir: str) -> None:
        """Write ``results.json``, ``results.md`` and ``results.png`` (each whole or not at all) to a folder or an
        ``s3://`` prefix; see ``report.write_report``."""
        write_report(self.to_json(), output_dir)


def run_benchmark(
    spark: SparkSession,
    ratings,
    dataset: str,
    models: list[str],
    k: int = 20,
    holdout: int = 3,
    positive_threshold: float = 2.0,
    seed: int = 0,
    progress: Progress = SILENT,
) -> BenchmarkResult:
    """Split ``ratings`` once, then fit, recommend and evaluate each model on the same split."""
    if not isinstance(k, int) or k < 1:
        raise InvalidParameterError(f"k must be a positive integer, got {k!r}")
    models = resolve_models(models)
    split = temporal_split(ratings, holdout=holdout, positive_threshold=positive_threshold)
    train = split.train.persist(StorageLevel.MEMORY_AND_DISK)
    test = split.test.persist(StorageLevel.MEMORY_AND_DISK)
    progress(f"splitting {dataset}: last {holdout} events per user held out, positives rated > {positive_threshold}")
    counts = split.counts()
    progress("split: " + ", ".join(f"{key} {value:,}" for key, value in counts.items()))
    split.require_queries(counts, dataset)  # before any model is fitted
    catalog = train.select(ITEM_ID).distinct().persist(StorageLevel.MEMORY_AND_DISK)

    result = BenchmarkResult(
        dataset=dataset,
        k=k,
        split=counts,
        settings={
            "holdout": holdout,
            "positive_threshold": positive_threshold,
            "seed": seed,
            "spark": {"version": spark.version, "master": spark.sparkContext.master},
            "environment": run_environment(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    for name in models:
        estimator = build_estimator(name, seed)
        progress(f"fitting {name}")
        started = time.perf_counter()
        model = estimator.fit(train)
        model.materialize()
        fit_seconds = time.perf_counter() - started
        progress(f"recommending and evaluating {name} (fit {fit_seconds:.1f}s)")
        started = time.perf_counter()
        metrics = evaluate(model.recommend(test, k), test, k=k, catalog=catalog)
        recommend_seconds = time.perf_counter() - started
        model.unpersist()
        row = {"model": name, **metrics, "fit_seconds": fit_seconds, "recommend_seconds": recommend_seconds}
        row["params"] = estimator.params_dict()
        if "training" in model.metadata:  # how a trained model was trained: what its numbers depend on
            training = model.metadata["training"]
            row["training"] = {key: training.get(key) for key in ("backend", "num_proc", "parameter_hashes", "environment")}
        result.results.append(row)
        progress(f"{name}: recall@{k} {metrics['recall']:.4f}, ndcg@{k} {metrics['ndcg']:.4f}")
    for frame in (train, test, catalog):
        frame.unpersist()
    return result


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
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as stream:
            cpu = next((line.split(":", 1)[1].strip() for line in stream if line.startswith("model name")), cpu)
    return {
        "python": platform.python_version(),
        "versions": versions,
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "variables": {name: os.environ.get(name) for name in ENVIRONMENT_VARIABLES},
    }


def benchmark_movielens(
    spark: SparkSession,
    dataset: str,
    path: str | None,
    *,
    models: str | list[str],
    k: int,
    holdout: int,
    positive_threshold: float,
    seed: int,
    output: str | None,
    progress: Progress = SILENT,
) -> BenchmarkResult:
    """Load a MovieLens release (``path``: its folder; None for the bundled one), run the benchmark on it,
    print the table on stdout and write the report to ``output`` when one is given: the CLI's and the
    benchmark job's whole work."""
    from .data.movielens import load_movielens

    progress(f"loading {dataset}" + (f" from {path}" if path else ""))
    ratings = load_movielens(spark, dataset, path).ratings
    result = run_benchmark(
        spark,
        ratings,
        dataset=dataset,
        models=models,
        k=k,
        holdout=holdout,
        positive_threshold=positive_threshold,
        seed=seed,
        progress=progress,
    )
    print(result.to_markdown(), flush=True)
    if output:
        result.write(output)
        progress(f"wrote {output}/results.md, results.json and results.png")
    return result
