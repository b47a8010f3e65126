"""``spark-retrieval`` command line: argument parsing and error → exit-code mapping, nothing else."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from typing import Callable, Sequence

from .errors import DataNotFoundError, InvalidParameterError, TrainingFailedError, UserError

EXIT_USER_ERROR = 2
EXIT_TRAINING_FAILED = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0    success
  1    unexpected error: a bug, printed with its traceback (please report it)
  2    bad input: arguments, config, data, paths or a saved model; one line on stderr
       ("error: ..." naming the file, line or key), and nothing written to the output
  3    distributed training failed (a training process was killed or crashed); one line on stderr naming
       the rank, the epoch and the checkpoint that running the same command again resumes from
  130  interrupted (Ctrl-C)
every case, with its message, is listed in docs/reliability.md"""

MASTER_URL = re.compile(
    r"local(\[(\*|[1-9]\d*)(,[1-9]\d*)?\])?|local-cluster\[[1-9]\d*,\s*[1-9]\d*,\s*[1-9]\d*\]"
    r"|spark://\S+|yarn|k8s://\S+"
)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


class UserErrorParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line + exit 2, like every other user error
        raise UserError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    from .benchmark import MODEL_FACTORIES
    from .data.movielens import DATASETS

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
    bench.add_argument("--models", default="all", help=f"'all' or a comma list of: {', '.join(MODEL_FACTORIES)}")
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
    from .benchmark import resolve_models, run_benchmark
    from .data.movielens import DATASETS, load_movielens
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


def check_output(output: str, what: str = "--output") -> None:
    """Fail before Spark starts when ``output`` cannot be written: an ``s3://`` output must name a bucket we
    can reach; a local one must be (or be creatable as) a folder we may write."""
    from . import s3

    if s3.is_s3_uri(output):
        s3.require_bucket(output)
    check_local_output(output, what)


def check_local_output(output: str, what: str = "--output") -> None:
    """A local ``output`` must be a folder, or be creatable under the nearest existing folder, writable by us."""
    if "://" in output and not output.startswith("file://"):
        return  # other filesystems are checked by Spark when it writes
    path = os.path.abspath(output.removeprefix("file://"))
    if os.path.exists(path) and not os.path.isdir(path):
        raise InvalidParameterError(f"{what} {output} is a file, not a folder")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InvalidParameterError(f"{what} {output} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidParameterError(f"{what} {output} is not writable: permission denied on {existing}")


def check_master(master: str, what: str = "--master") -> None:
    """A Spark master URL Spark accepts (checked before Spark starts, which would fail with a JVM trace)."""
    if not MASTER_URL.fullmatch(master.strip()):
        raise InvalidParameterError(
            f"{what} {master!r} is not a Spark master URL (local, local[N], local[*], spark://host:port, yarn, k8s://…)"
        )


COMMANDS = {"benchmark": run_benchmark_command}


def exit_code_of(run: Callable[[], int]) -> int:
    """Run a command: its exit code, or one line on stderr and exit code 2 for a ``UserError``, 3 for a
    ``TrainingFailedError``."""
    try:
        return run()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingFailedError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    def run() -> int:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)

    return exit_code_of(run)


if __name__ == "__main__":
    sys.exit(main())
