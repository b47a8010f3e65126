"""The ``jobs/*.py`` spark-submit entry points: one function per job, plus argument and error handling.

Layout under the config's ``output`` (a local path or any URI Spark writes)::

    split/train, split/test        parquet, written by prepare
    models/<model.name>/           RetrievalModel.save (tables + metadata.json), written by train
    metrics/<model.name>.json      written by evaluate
    tuning/tuned.json, tuning.png, study.db   written by tune (from split/train only: the test set is never read)
    benchmark/results.{md,json,png} written by benchmark (with ``params: <tuned.json>``, the tuned settings)
"""

from __future__ import annotations

import json
import math
import sys
from typing import Callable, Sequence

from pyspark.sql import DataFrame, SparkSession

from .command import EXIT_CODES_HELP, UserErrorParser, exit_code_of
from .config import ConfigError, JobConfig, load_config
from .destinations import ARROW, FILES, TABLES, Destination, check_before_spark, check_with_spark, is_local
from .errors import OutputWriteError, UserError
from .models.base import RetrievalEstimator
from .models.registry import MODELS, build_estimator as build_registered, resolve_models
from .progress import Progress
from .session import check_master


def build_estimator(
    config: JobConfig, positive_threshold: float | None = None, verbose: bool | None = None, **side
) -> RetrievalEstimator:
    """The configured model: the registry's row (seeded; ``positive_threshold``, ``verbose`` and ``side`` as
    ``registry.build_estimator`` takes them), then ``model.params`` set on it."""
    if config.model is None:
        raise ConfigError(f"{config.source}: missing required key 'model' (model: {{name: …, params: {{…}}}})")
    name, params = config.model.name, config.model.params
    if name not in MODELS:
        raise ConfigError(f"{config.source}: model.name: unknown model {name!r}; choose from: {', '.join(MODELS)}")
    estimator = build_registered(name, config.seed, None, positive_threshold, verbose, **side)
    for key, value in params.items():
        if not estimator.hasParam(key):
            allowed = ", ".join(sorted(p.name for p in estimator.params))
            raise ConfigError(f"{config.source}: unknown key 'model.params.{key}' for {name}; allowed: {allowed}")
        try:
            estimator._set(**{key: value})
        except UserError as error:
            raise ConfigError(f"{config.source}: model.params.{key}: {error}") from None
    try:
        estimator.validate_params()
    except UserError as error:
        raise ConfigError(f"{config.source}: model.params: {error}") from None
    return estimator


def validate(config: JobConfig, job: str) -> None:
    """Every check of the config itself (no I/O), so a bad config fails in milliseconds."""
    from .data.movielens import DATASETS

    data = config.data
    if data.interactions is not None:
        if data.dataset is not None or data.path is not None:
            raise ConfigError(f"{config.source}: data: give either interactions (your event log) or dataset/path (MovieLens), not both")
        try:
            event_log(config)
        except UserError as error:
            raise ConfigError(f"{config.source}: data: {error}") from None
    else:
        for key in ("format", "items", "users", "schema"):
            if getattr(data, key) is not None:
                raise ConfigError(f"{config.source}: data.{key} describes an event log: give data.interactions too")
        if data.columns:
            raise ConfigError(f"{config.source}: data.columns describes an event log: give data.interactions too")
        if data.dataset is None:
            raise ConfigError(f"{config.source}: data: give dataset (a MovieLens release) or interactions (your event log)")
    if data.dataset is not None and data.dataset not in DATASETS:
        raise ConfigError(f"{config.source}: data.dataset: unknown dataset {config.data.dataset!r}; choose from: {', '.join(DATASETS)}")
    for key, value in (("k", config.k), ("data.holdout", config.data.holdout)):
        if value < 1:
            raise ConfigError(f"{config.source}: {key}: expected a positive integer, got {value}")
    if config.data.positive_threshold is not None and not math.isfinite(config.data.positive_threshold):
        raise ConfigError(f"{config.source}: data.positive_threshold: expected a finite number, got {config.data.positive_threshold}")
    if config.master is not None:
        check_master(config.master, f"{config.source}: master:")
    if job in ("train", "evaluate"):
        build_estimator(config)
    if job in ("benchmark", "tune"):
        try:
            resolve_models(config.models)
        except UserError as error:
            raise ConfigError(f"{config.source}: models: {error}") from None
    if job == "benchmark":
        from .benchmark import parse_seeds
        from .significance import check_resamples

        for key, check in (("bootstrap", check_resamples), ("seeds", parse_seeds)):
            value = getattr(config, key)
            try:
                if value is not None:
                    check(value)
            except UserError as error:
                raise ConfigError(f"{config.source}: {key}: {error}") from None
    if job == "tune":
        from .tuning import check_tuning_arguments

        if not is_local(config.output):
            raise ConfigError(f"{config.source}: output: the tune job keeps its Optuna study in SQLite, which needs a "
                              f"local folder (or a shared mount), got {config.output}")
        try:
            check_tuning_arguments(
                config.models, config.trials, config.metric, config.k, config.data.holdout, config.seed,
                config.max_epochs, config.patience,
            )
        except UserError as error:
            raise ConfigError(f"{config.source}: {error}") from None


def check_destinations(config: JobConfig, job: str) -> list[Destination]:
    """Check every destination of ``job`` that needs no Spark (local folders, S3 prefixes: seconds at most);
    returns them all, for ``check_with_spark`` to check the other URIs once Spark runs."""
    estimator = build_estimator(config) if job == "train" else None
    destinations = job_destinations(config, job, estimator)
    check_before_spark(destinations)
    return destinations


def job_destinations(config: JobConfig, job: str, estimator: RetrievalEstimator | None = None) -> list[Destination]:
    """Everything ``job`` writes, each with how it is written (see ``destinations``)."""
    what = f"{config.source}: output:"
    written = {
        "prepare": [(config.path("split"), TABLES)],
        "train": [(model_path(config), TABLES)] if config.model is not None else [],
        "evaluate": [(config.path("metrics"), FILES)],
        "benchmark": [(config.path("benchmark"), FILES)],
        "tune": [(config.path("tuning"), FILES)],
    }.get(job, [])
    found = []
    if written and is_local(config.output):  # "output is a file" names the output itself
        found.append(Destination(config.output, what, written[0][1]))
    found += [Destination(path, what, kind) for path, kind in written]
    if job == "train" and estimator is not None:
        for param, kind in (("checkpoint_dir", ARROW), ("working_dir", TABLES)):
            value = estimator.getOrDefault(param) if estimator.hasParam(param) else None
            if value:
                found.append(Destination(str(value), f"{config.source}: model.params.{param}:", kind))
    return found


# -- the jobs --------------------------------------------------------------------------------------


def event_log(config: JobConfig):
    from .data.event_log import EventLog

    data = config.data
    return EventLog(data.interactions, data.format, data.columns, data.items, data.users)


def open_job_data(spark: SparkSession, config: JobConfig, progress: Progress):
    from .benchmark import open_data

    data = config.data
    return open_data(
        spark,
        dataset=data.dataset,
        path=data.path,
        log=event_log(config) if data.interactions is not None else None,
        positive_threshold=data.positive_threshold,
        schema=data.schema,
        progress=progress,
    )


SOURCE = "source"
"""split/source: one row, the threshold the split was made with and the data's description (JSON)."""


def prepare(spark: SparkSession, config: JobConfig, progress: Progress) -> None:
    """Split the data; an event log's id indexes go to split/ids/{users,items} (dense id, original id)."""
    from .data.split import temporal_split
    from .storage import atomic_directory

    data = config.data
    opened = open_job_data(spark, config, progress)
    split = temporal_split(opened.ratings, holdout=data.holdout, positive_threshold=opened.positive_threshold)
    counts = split.counts()
    progress("split: " + ", ".join(f"{key} {value:,}" for key, value in counts.items()))
    split.require_queries(counts, data.path or data.name)
    # train and test are published together: a reader never pairs a new train with an old test.
    with atomic_directory(spark, config.path("split")) as staging:
        for part, frame in (("train", split.train), ("test", split.test)):
            frame.write.parquet(f"{staging}/{part}")
        source = json.dumps(opened.source or {"dataset": data.name})
        spark.createDataFrame([(float(opened.positive_threshold), source)], "positive_threshold double, description string").coalesce(1) \
            .write.parquet(f"{staging}/{SOURCE}")
        if opened.log is not None:
            opened.log.users.save(f"{staging}/ids/users")
            opened.log.items.save(f"{staging}/ids/items")
    opened.unpersist()
    progress(f"wrote {config.path('split', 'train')} and {config.path('split', 'test')}")


def split_side(spark: SparkSession, config: JobConfig) -> dict:
    """An event log's side tables on the dense ids prepare wrote (split/ids), and the schema, for the two-tower
    models; nothing for MovieLens."""
    from .columns import ITEM_ID, USER_ID
    from .data.event_log import IdIndex, side_table

    data = config.data
    if data.interactions is None:
        return {}
    side = {"schema": data.schema}
    for key, path, column, kind in (("item_features", data.items, ITEM_ID, "items"), ("user_features", data.users, USER_ID, "users")):
        if path is not None:
            index = IdIndex(column, read_split(spark, config, f"ids/{kind}"))
            side[key] = side_table(spark, event_log(config), path, column, index, kind)
    return side


def split_threshold(spark: SparkSession, config: JobConfig) -> float:
    """The threshold split/ was made with (prepare records it), else the config's or 2.0."""
    from .storage import path_exists

    path = config.path("split", SOURCE)
    if path_exists(spark, path):
        return spark.read.parquet(path).first()["positive_threshold"]
    from .benchmark import DEFAULT_POSITIVE_THRESHOLD

    return DEFAULT_POSITIVE_THRESHOLD if config.data.positive_threshold is None else config.data.positive_threshold


def train(spark: SparkSession, config: JobConfig, progress: Progress) -> None:
    estimator = build_estimator(config, split_threshold(spark, config), progress.enabled, **split_side(spark, config))
    progress(f"fitting {config.model.name}")
    model = estimator.fit(read_split(spark, config, "train"))
    try:
        model.save(model_path(config))
    except OutputWriteError as error:
        raise keep_model_locally(spark, model, config, error) from None
    progress(f"saved {model_path(config)}")


def keep_model_locally(spark: SparkSession, model, config: JobConfig, error: OutputWriteError) -> OutputWriteError:
    """A model that could not be saved where asked, saved to a local fallback folder instead when Spark runs
    on this machine (``local[…]``: its executors write the driver's disk); on a cluster, ``error`` as it is."""
    import os

    from .destinations import fallback_folder

    if not spark.sparkContext.master.startswith("local"):
        return error
    try:
        folder = fallback_folder()
        kept = os.path.join(folder, config.model.name)
        model.save(f"file://{kept}")
    except Exception:  # noqa: BLE001 - the first failure is the one to report
        return error
    return OutputWriteError(f"{error}; the model is kept in {kept}/ (copy it from there)",
                            destination=error.destination, fallback=folder)


def evaluate(spark: SparkSession, config: JobConfig, progress: Progress) -> None:
    from .columns import ITEM_ID
    from .evaluation import evaluate as evaluate_recommendations
    from .models.base import RetrievalModel
    from .storage import write_small_text

    model = RetrievalModel.load(model_path(config))
    test = read_split(spark, config, "test")
    catalog = read_split(spark, config, "train").select(ITEM_ID).distinct()
    progress(f"evaluating {config.model.name} at k = {config.k}")
    metrics = evaluate_recommendations(model.recommend(test, config.k), test, k=config.k, catalog=catalog)
    report = {"model": config.model.name, "dataset": config.data.name, "k": config.k, **metrics}
    text = json.dumps(report, indent=2) + "\n"
    try:
        write_small_text(metrics_path(config), text, spark)
    except Exception as error:  # noqa: BLE001 - whatever stopped the write, the metrics are kept
        from .destinations import keep_locally

        failure = keep_locally({f"{config.model.name}.json": text.encode("utf-8")}, metrics_path(config), error, "the metrics")
        print(json.dumps(report), flush=True)
        raise failure from None
    print(json.dumps(report), flush=True)
    progress(f"wrote {metrics_path(config)}")


def tune(spark: SparkSession, config: JobConfig, progress: Progress) -> None:
    """Tune ``models`` on the validation split carved from ``split/train``: this job never reads ``split/test``."""
    from .tuning import tune as tune_models
    from .tuning import write_tuning

    result = tune_models(
        read_split(spark, config, "train"),
        config.models,
        side=split_side(spark, config),
        trials=config.trials,
        metric=config.metric,
        k=config.k,
        holdout=config.data.holdout,
        positive_threshold=split_threshold(spark, config),
        seed=config.seed,
        storage_dir=config.path("tuning"),
        progress=progress,
        max_epochs=config.max_epochs,
        patience=config.patience,
    )
    write_tuning(result, config.path("tuning"))
    progress(f"wrote {config.path('tuning', 'tuned.json')} and tuning.png")


def benchmark(spark: SparkSession, config: JobConfig, progress: Progress) -> None:
    from .benchmark import report_benchmark
    from .tuning import read_tuned

    data = config.data
    tuned = None
    if config.params:
        try:
            tuned = read_tuned(config.params, config.models)
        except UserError as error:
            raise ConfigError(f"{config.source}: params: {error}") from None
    opened = open_job_data(spark, config, progress)
    try:
        report_benchmark(
            spark,
            opened.ratings,
            data.name,
            models=config.models,
            k=config.k,
            holdout=data.holdout,
            positive_threshold=opened.positive_threshold,
            seed=config.seed,
            bootstrap=config.bootstrap,
            seeds=config.seeds,
            tuned=tuned,
            side=opened.side,
            source=opened.source,
            output=config.path("benchmark"),
            progress=progress,
        )
    finally:
        opened.unpersist()


JOBS: dict[str, Callable[[SparkSession, JobConfig, Progress], None]] = {
    "prepare": prepare,
    "train": train,
    "evaluate": evaluate,
    "benchmark": benchmark,
    "tune": tune,
}


def read_split(spark: SparkSession, config: JobConfig, part: str) -> DataFrame:
    from .errors import DataNotFoundError, MalformedDataError
    from .storage import path_exists, read_failure

    path = config.path("split", part)
    if not path_exists(spark, path):
        raise DataNotFoundError(f"{path} not found: run jobs/prepare.py with this config first")
    try:
        return spark.read.parquet(path)
    except Exception as error:
        reason = read_failure(error)
        if reason is None:
            raise
        raise MalformedDataError(f"{path} cannot be read ({reason}): run jobs/prepare.py with this config again") from None


def model_path(config: JobConfig) -> str:
    return config.path("models", config.model.name)


def metrics_path(config: JobConfig) -> str:
    return config.path("metrics", f"{config.model.name}.json")


# -- entry point -----------------------------------------------------------------------------------


def start_spark(config: JobConfig) -> SparkSession:
    """Under spark-submit its master and conf; otherwise a local session (``master`` from the config)."""
    from .session import get_spark

    return get_spark(master=config.master)


def parse_arguments(job: str, argv: Sequence[str]) -> tuple[str, list[str], bool]:
    import argparse

    parser = UserErrorParser(prog=f"jobs/{job}.py", description=f"spark-retrieval {job} job", epilog=EXIT_CODES_HELP,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config: a local path or an s3:// URI")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted key, e.g. model.params.k_neighbours=50")
    parser.add_argument("--quiet", action="store_true", help="no stage lines on stderr")
    args = parser.parse_args(argv)
    return args.config, args.overrides, args.quiet


def run_job(job: str, argv: Sequence[str]) -> int:
    config_uri, overrides, quiet = parse_arguments(job, argv)
    config = load_config(config_uri, overrides)
    validate(config, job)
    destinations = check_destinations(config, job)
    progress = Progress(enabled=not quiet)
    progress(f"{job}: {config.source} → {config.output}")
    spark = start_spark(config)
    check_with_spark(spark, destinations)  # other URIs: their Hadoop filesystem, before any data is read
    JOBS[job](spark, config, progress)
    return 0


def main(job: str, argv: Sequence[str] | None = None) -> int:
    """What ``jobs/<job>.py`` calls: exit code 0, or one line on stderr and 2 for a user error, 3 for failed
    distributed training, 4 for output that could not be written after the work (see ``command``)."""
    return exit_code_of(lambda: run_job(job, sys.argv[1:] if argv is None else argv))
