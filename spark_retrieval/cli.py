"""``spark-retrieval`` command line: argument parsing and error → exit-code mapping, nothing else."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from .errors import InvalidParameterError, UserError

EXIT_USER_ERROR = 2


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class UserErrorParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line + exit 2, like every other user error
        raise UserError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    from .benchmark import MODEL_FACTORIES
    from .data.movielens import DATASETS

    parser = UserErrorParser(prog="spark-retrieval", description="Train and evaluate retrieval models on Spark.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=UserErrorParser)

    bench = commands.add_parser("benchmark", help="fit, recommend and evaluate models on one split; print the table")
    bench.add_argument("--dataset", default="ml-latest-small", help=f"one of {', '.join(DATASETS)}")
    bench.add_argument("--data-dir", help="folder or URI holding the dataset's native files (bundled data needs none)")
    bench.add_argument("--models", default="all", help=f"'all' or a comma list of: {', '.join(MODEL_FACTORIES)}")
    bench.add_argument("--k", type=positive_int, default=20, help="list length for every metric (default 20)")
    bench.add_argument("--holdout", type=positive_int, default=3, help="events held out per user (default 3)")
    bench.add_argument("--positive-threshold", type=float, default=2.0, help="held-out events rated above this are queries")
    bench.add_argument("--master", help="Spark master URL when no session is active (default local[*])")
    bench.add_argument("--output", help="folder or s3:// prefix for results.md, results.json and results.png")
    bench.add_argument("--seed", type=int, default=0, help="seed for every random choice")
    bench.add_argument("--spark-progress", action="store_true", help="show Spark's console progress bar")
    bench.add_argument("--quiet", action="store_true", help="no stage lines on stderr")
    return parser


def run_benchmark_command(args: argparse.Namespace) -> int:
    from .benchmark import resolve_models, run_benchmark
    from .data.movielens import DATASETS, load_movielens
    from .progress import Progress
    from .session import get_spark

    models = resolve_models(args.models)  # checked before Spark starts
    if args.dataset not in DATASETS:
        raise InvalidParameterError(f"unknown dataset {args.dataset!r}; choose from: {', '.join(DATASETS)}")
    if args.data_dir and "://" not in args.data_dir and not os.path.isdir(args.data_dir):
        from .errors import DataNotFoundError

        raise DataNotFoundError(f"data folder not found: {args.data_dir}")
    if args.output:
        check_output(args.output)
    progress = Progress(enabled=not args.quiet)
    progress(f"starting Spark ({args.master or 'active session or local[*]'})")
    spark = get_spark(master=args.master, conf={"spark.ui.showConsoleProgress": str(args.spark_progress).lower()})
    progress(f"loading {args.dataset}" + (f" from {args.data_dir}" if args.data_dir else ""))
    ratings = load_movielens(spark, args.dataset, args.data_dir).ratings
    result = run_benchmark(
        spark,
        ratings,
        dataset=args.dataset,
        models=models,
        k=args.k,
        holdout=args.holdout,
        positive_threshold=args.positive_threshold,
        seed=args.seed,
        progress=progress,
    )
    print(result.to_markdown(), flush=True)
    if args.output:
        result.write(args.output)
        progress(f"wrote {args.output}/results.md, results.json and results.png")
    return 0


def check_output(output: str) -> None:
    """An ``s3://`` output must name a bucket we can reach; checked before Spark starts."""
    from . import s3

    if s3.is_s3_uri(output):
        s3.require_bucket(output)


COMMANDS = {"benchmark": run_benchmark_command}


def exit_code_of(run: Callable[[], int]) -> int:
    """Run a command: its exit code, or one line on stderr and exit code 2 for a ``UserError``."""
    try:
        return run()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    def run() -> int:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)

    return exit_code_of(run)


if __name__ == "__main__":
    sys.exit(main())
