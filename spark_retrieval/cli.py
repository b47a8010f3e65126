"""``spark-retrieval`` command line: argument parsing and error → exit-code mapping, nothing else."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .command import EXIT_CODES_HELP, UserErrorParser, check_output, exit_code_of, finite_float, positive_int
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
    bench.add_argument("--dataset", default="ml-latest-small", help=f"one of {', '.join(DATASETS)}")
    bench.add_argument("--data-dir", help="folder or URI holding the dataset's native files (bundled data needs none)")
    bench.add_argument("--models", default="all", help=f"'all' or a comma list of: {', '.join(MODELS)}")
    bench.add_argument("--k", type=positive_int, default=20, help="list length for every metric (default 20)")
    bench.add_argument("--holdout", type=positive_int, default=3, help="events held out per user (default 3)")
    bench.add_argument("--positive-threshold", type=finite_float, default=2.0, help="held-out events rated above this are queries")
    bench.add_argument("--master", help="Spark master URL when no session is active (default local[*])")
    bench.add_argument("--output", help="folder or s3:// prefix for results.md, results.json and results.png")
    bench.add_argument("--seed", type=int, default=0, help="seed for every random choice")
    bench.add_argument("--spark-progress", action="store_true", help="show Spark's console progress bar")
    bench.add_argument("--quiet", action="store_true", help="no stage lines on stderr")
    return parser


def run_benchmark_command(args: argparse.Namespace) -> int:
    from .benchmark import benchmark_movielens
    from .data.movielens import DATASETS
    from .models.registry import resolve_models
    from .progress import Progress
    from .session import get_spark

    models = resolve_models(args.models)  # checked before Spark starts
    if args.dataset not in DATASETS:
        raise InvalidParameterError(f"unknown dataset {args.dataset!r}; choose from: {', '.join(DATASETS)}")
    if args.data_dir and "://" not in args.data_dir:
        if not os.path.exists(args.data_dir):
            raise DataNotFoundError(f"data folder not found: {args.data_dir}")
        if not os.path.isdir(args.data_dir):
            raise DataNotFoundError(f"--data-dir {args.data_dir} is a file; pass the folder holding the dataset's files")
    if args.master:
        check_master(args.master)
    if args.output:
        check_output(args.output)
    progress = Progress(enabled=not args.quiet)
    progress(f"starting Spark ({args.master or 'active session or local[*]'})")
    spark = get_spark(master=args.master, conf={"spark.ui.showConsoleProgress": str(args.spark_progress).lower()})
    benchmark_movielens(
        spark,
        args.dataset,
        args.data_dir,
        models=models,
        k=args.k,
        holdout=args.holdout,
        positive_threshold=args.positive_threshold,
        seed=args.seed,
        output=args.output,
        progress=progress,
    )
    return 0


COMMANDS = {"benchmark": run_benchmark_command}


def main(argv: Sequence[str] | None = None) -> int:
    def run() -> int:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)

    return exit_code_of(run)


if __name__ == "__main__":
    sys.exit(main())
