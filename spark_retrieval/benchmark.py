"""Run every model on one split with one evaluator, and report the table (Markdown, JSON).

The library entry point is ``run_benchmark``; ``spark-retrieval benchmark`` is a thin CLI over it.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pyspark import StorageLevel
from pyspark.sql import SparkSession

from .columns import ITEM_ID
from .data.split import temporal_split
from .errors import InvalidParameterError
from .evaluation import evaluate
from .models.base import RetrievalEstimator
from .progress import SILENT, Progress


def _global_hot(seed: int) -> RetrievalEstimator:
    from .models import GlobalHot

    return GlobalHot()


def _item_cf(seed: int) -> RetrievalEstimator:
    from .models import ItemCF

    return ItemCF(seed=seed)


def _swing(seed: int) -> RetrievalEstimator:
    from .models import Swing

    return Swing(seed=seed)


def _als(seed: int) -> RetrievalEstimator:
    from .models import ALS

    return ALS(seed=seed)


def _als_seed_preset(seed: int) -> RetrievalEstimator:
    from .models import ALS

    return ALS.seed_preset(seed=seed)


def _two_tower(name: str) -> Callable[[int], RetrievalEstimator]:
    def factory(seed: int) -> RetrievalEstimator:
        from .models.two_tower.presets import BENCHMARK_FACTORIES

        return BENCHMARK_FACTORIES[name](seed)

    return factory


TWO_TOWER_ROWS = ("dssm_bce_neg10", "dssm_bce_neg100", "dssm_softmax", "simplex_ccl")

# name → factory(seed); factories import lazily so optional dependencies (torch, horovod) stay optional.
MODEL_FACTORIES: dict[str, Callable[[int], RetrievalEstimator]] = {
    "global_hot": _global_hot,
    "item_cf": _item_cf,
    "swing": _swing,
    "als": _als,
    "als_seed_preset": _als_seed_preset,
    **{name: _two_tower(name) for name in TWO_TOWER_ROWS},
}
CLASSIC_MODELS: tuple[str, ...] = ("global_hot", "item_cf", "swing", "als")
# Rows of ``--models all``: every model but the presets that only reproduce old results (asked for by name).
DEFAULT_MODELS: tuple[str, ...] = (*CLASSIC_MODELS, *TWO_TOWER_ROWS)

TABLE_COLUMNS = (
    ("model", "model", "{}"),
    ("precision", "P@{k}", "{:.4f}"),
    ("recall", "R@{k}", "{:.4f}"),
    ("map", "MAP@{k}", "{:.4f}"),
    ("ndcg", "NDCG@{k}", "{:.4f}"),
    ("hit_rate", "HR@{k}", "{:.4f}"),
    ("coverage", "coverage", "{:.4f}"),
    ("queries", "queries", "{:d}"),
    ("fit_seconds", "fit s", "{:.1f}"),
    ("recommend_seconds", "rec+eval s", "{:.1f}"),
)


def resolve_models(spec: str | list[str]) -> list[str]:
    """``"all"`` or a comma-separated list → known model names, in the order given."""
    names = list(DEFAULT_MODELS) if spec in ("all", ["all"]) else spec
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODEL_FACTORIES]
    if unknown or not names:
        raise InvalidParameterError(
            f"unknown model name(s): {', '.join(unknown) or '(none given)'}; "
            f"choose from: all, {', '.join(MODEL_FACTORIES)}"
        )
    return names


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
        header = [title.format(k=self.k) for _, title, _ in TABLE_COLUMNS]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for row in self.results:
            cells = [fmt.format(row[key]) if row.get(key) is not None else "–" for key, _, fmt in TABLE_COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def write(self, output_dir: str) -> None:
        """Write ``results.json``, ``results.md`` and ``results.png`` (each whole or not at all) to a folder or an
        ``s3://`` prefix; see ``report.write_report``."""
        from .report import write_report

        write_report(self, output_dir)


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
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    for name in models:
        estimator = MODEL_FACTORIES[name](seed)
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
        result.results.append(row)
        progress(f"{name}: recall@{k} {metrics['recall']:.4f}, ndcg@{k} {metrics['ndcg']:.4f}")
    for frame in (train, test, catalog):
        frame.unpersist()
    return result
