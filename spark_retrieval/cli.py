"""``spark-retrieval`` command line: argument parsing and error → exit-code mapping, nothing else."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .command import EXIT_CODES_HELP, UserErrorParser, exit_code_of, finite_float, positive_int, positive_int_list
from .destinations import Destination, check_before_spark, check_with_spark
from .errors import DataNotFoundError, InvalidParameterError
from .session import check_master


def build_parser() -> argparse.ArgumentParser:
    from .data.movielens import DATASETS
    from .models.registry import MODELS

    parser = UserErrorParser(
        prog="spark-retrieval",
        description="Train and evaluate retrieval models on Spark.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=UserErrorParser)

    bench = commands.add_parser(
        "benchmark",
        help="fit, recommend and evaluate models on one split; print the table",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(bench, DATASETS, MODELS, "folder or s3:// prefix for results.md, results.json and results.png")
    bench.add_argument(
        "--params",
        help="tuned.json written by 'spark-retrieval tune': the models it names are fitted with their tuned parameters",
    )
    bench.add_argument(
        "--seeds",
        help="comma list of seeds: stochastic rows are fitted once per seed and show the mean and spread across "
        "them (default: --seed only; deterministic rows are fitted once)",
    )
    bench.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="resamples of the 95%% intervals over queries and the paired comparisons with the best row "
        "(default 1000, 0: none)",
    )

    tune = commands.add_parser(
        "tune",
        help="tune models on a validation split carved from train (the test set is never read); write tuned.json",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(tune, DATASETS, MODELS, "local folder for tuned.json, tuning.png and the Optuna study (study.db)")
    tune.add_argument("--trials", type=int, default=20, help="trials per model, the same for every model (default 20)")
    tune.add_argument("--metric", default="ndcg", help="ndcg or recall @k on the validation queries (default ndcg)")
    tune.add_argument("--max-epochs", type=int, default=12,
                      help="a two-tower trial's epoch limit; its best epoch on validation is kept (default 12)")
    tune.add_argument("--patience", type=int, default=3,
                      help="a two-tower trial stops after this many epochs without a better validation score (default 3)")
    return parser


def add_run_arguments(parser: argparse.ArgumentParser, datasets, models, output_help: str) -> None:
    """The options every command that loads a dataset and runs models shares."""
    parser.add_argument("--dataset", help=f"a MovieLens release, one of {', '.join(datasets)} (default ml-latest-small)")
    parser.add_argument("--data-dir", help="folder or URI holding the dataset's native files (bundled data needs none)")
    from .data.event_log import FORMATS

    log = parser.add_argument_group("your own event log (instead of --dataset)")
    log.add_argument("--interactions", metavar="URI", help="file, folder or glob of events: one row per event")
    log.add_argument("--format", choices=FORMATS, help="parquet, csv (with a header) or json (default: from the extension, else parquet)")
    log.add_argument("--columns", help="your column names, e.g. user_id=uid,item_id=sku,timestamp=ts[,rating=score]; "
                     "no rating column: every event is a positive")
    log.add_argument("--items", metavar="URI", help="item table (same id column as the log) for the two-tower models")
    log.add_argument("--users", metavar="URI", help="user table (same id column as the log) for the two-tower models")
    log.add_argument("--schema", help="two-tower feature schema (YAML) naming the side tables' columns (default: the row's own)")
    parser.add_argument("--models", default="all", help=f"'all' or a comma list of: {', '.join(models)}")
    parser.add_argument("--k", type=positive_int_list, default=[20],
                        help="list length for every metric (default 20); benchmark: a comma list, e.g. 20,100,200, "
                        "also reports each row at the longer lengths (the first is the table's)")
    parser.add_argument("--holdout", type=positive_int, default=3, help="events held out per user (default 3)")
    parser.add_argument("--positive-threshold", type=finite_float,
                        help="held-out events rated above this are queries (default 2.0; a log without ratings takes none)")
    parser.add_argument("--master", help="Spark master URL when no session is active (default local[*])")
    parser.add_argument("--output", help=output_help)
    parser.add_argument("--seed", type=int, default=0, help="seed for every random choice")
    parser.add_argument("--spark-progress", action="store_true", help="show Spark's console progress bar")
    parser.add_argument("--quiet", action="store_true", help="no stage lines on stderr")


def check_run_arguments(args: argparse.Namespace) -> list[Destination]:
    """Every check of a run's common options that needs no Spark; returns its destinations, checked."""
    from .data.movielens import DATASETS

    if args.interactions is not None:
        if args.dataset or args.data_dir:
            raise InvalidParameterError("--interactions reads your own log: drop --dataset / --data-dir")
        event_log(args)  # checks --format and --columns
    else:
        for option in ("format", "columns", "items", "users", "schema"):
            if getattr(args, option) is not None:
                raise InvalidParameterError(f"--{option} describes an event log: give --interactions too")
        args.dataset = args.dataset or "ml-latest-small"
    if args.dataset is not None and args.dataset not in DATASETS:
        raise InvalidParameterError(f"unknown dataset {args.dataset!r}; choose from: {', '.join(DATASETS)}")
    if args.data_dir and "://" not in args.data_dir:
        if not os.path.exists(args.data_dir):
            raise DataNotFoundError(f"data folder not found: {args.data_dir}")
        if not os.path.isdir(args.data_dir):
            raise DataNotFoundError(f"--data-dir {args.data_dir} is a file; pass the folder holding the dataset's files")
    if args.master:
        check_master(args.master)
    destinations = [Destination(args.output, "--output")] if args.output else []
    check_before_spark(destinations)  # local folders and S3 prefixes: before Spark starts
    return destinations


def event_log(args: argparse.Namespace):
    from .data.event_log import EventLog, parse_columns

    return EventLog(args.interactions, args.format, parse_columns(args.columns), args.items, args.users)


def open_run_data(spark, args: argparse.Namespace, progress):
    from .benchmark import open_data

    return open_data(
        spark,
        dataset=args.dataset,
        path=args.data_dir,
        log=event_log(args) if args.interactions is not None else None,
        positive_threshold=args.positive_threshold,
        schema=args.schema,
        progress=progress,
    )


def start_run(args: argparse.Namespace, destinations: list[Destination]):
    """The Spark session (its other destinations checked before any data is read) and the stage-line printer."""
    from .progress import Progress
    from .session import get_spark

    progress = Progress(enabled=not args.quiet)
    progress(f"starting Spark ({args.master or 'active session or local[*]'})")
    spark = get_spark(master=args.master, conf={"spark.ui.showConsoleProgress": str(args.spark_progress).lower()})
    check_with_spark(spark, destinations)  # other URIs: their Hadoop filesystem, before any data is read
    return spark, progress


def run_benchmark_command(args: argparse.Namespace) -> int:
    from .benchmark import parse_seeds, report_benchmark
    from .models.registry import resolve_models
    from .significance import check_resamples
    from .tuning import read_tuned

    models = resolve_models(args.models)  # checked before Spark starts
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    check_resamples(args.bootstrap)
    tuned = read_tuned(args.params, models) if args.params else None
    destinations = check_run_arguments(args)
    spark, progress = start_run(args, destinations)
    data = open_run_data(spark, args, progress)
    report_benchmark(
        spark,
        data.ratings,
        args.interactions or args.dataset,
        models=models,
        k=args.k,
        holdout=args.holdout,
        positive_threshold=data.positive_threshold,
        seed=args.seed,
        bootstrap=args.bootstrap,
        seeds=seeds,
        tuned=tuned,
        side=data.side,
        source=data.source,
        output=args.output,
        progress=progress,
    )
    return 0


def run_tune_command(args: argparse.Namespace) -> int:
    from .data.split import temporal_split
    from .destinations import is_local
    from .tuning import check_tuning_arguments, tune, write_tuning

    if len(args.k) > 1:
        raise InvalidParameterError(f"tune scores one list length: --k {','.join(map(str, args.k))} gives {len(args.k)}")
    args.k = args.k[0]
    check_tuning_arguments(args.models, args.trials, args.metric, args.k, args.holdout, args.seed, args.max_epochs, args.patience)
    if not args.output:
        raise InvalidParameterError("--output is required: the folder for tuned.json, tuning.png and the study")
    if not is_local(args.output):
        raise InvalidParameterError(f"--output {args.output}: the Optuna study is SQLite, which needs a local folder")
    destinations = check_run_arguments(args)
    spark, progress = start_run(args, destinations)
    data = open_run_data(spark, args, progress)
    split = temporal_split(data.ratings, holdout=args.holdout, positive_threshold=data.positive_threshold)
    # Only train goes to the tuner: the test set is never read while tuning.
    result = tune(
        split.train,
        args.models,
        trials=args.trials,
        metric=args.metric,
        k=args.k,
        holdout=args.holdout,
        positive_threshold=data.positive_threshold,
        seed=args.seed,
        storage_dir=args.output,
        progress=progress,
        side=data.side,
        max_epochs=args.max_epochs,
        patience=args.patience,
    )
    write_tuning(result, args.output)
    progress(f"wrote {args.output}/tuned.json and tuning.png")
    return 0


COMMANDS = {"benchmark": run_benchmark_command, "tune": run_tune_command}


def main(argv: Sequence[str] | None = None) -> int:
    def run() -> int:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)

    return exit_code_of(run)


if __name__ == "__main__":
    sys.exit(main())
