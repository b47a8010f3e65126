"""What every command-line entry point shares (``spark-retrieval`` and ``jobs/*.py``): exit codes, the
error → exit code mapping, argument types and the checks of output destinations made before Spark starts."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .errors import InvalidParameterError, OutputWriteError, TrainingFailedError, UserError
from .validation import distinct_integers, integer, number

EXIT_USER_ERROR = 2
EXIT_TRAINING_FAILED = 3
EXIT_OUTPUT_FAILED = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0    success
  1    unexpected error: a bug, printed with its traceback (please report it)
  2    bad input: arguments, config, data, paths or a saved model; one line on stderr
       ("error: ..." naming the file, line or key), and nothing written to the output; every output
       destination is checked before any work, so a bad one fails in seconds
  3    distributed training failed (a training process was killed or crashed); one line on stderr naming
       the rank, the epoch and the checkpoint that running the same command again resumes from
  4    the work is done but its output could not be written (disk full, credentials expired, ...); one
       line on stderr naming the destination, the reason and the local folder that holds the results
  130  interrupted (Ctrl-C)
every case, with its message, is listed in docs/reliability.md"""


def positive_int(text: str) -> int:
    try:
        return integer(at_least=1)(int(text))
    except (ValueError, InvalidParameterError):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None


def positive_int_list(text: str) -> list[int]:
    """``20`` or ``20,100,200``: distinct positive integers, in the order given."""
    try:
        return distinct_integers(text, "the value", at_least=1)
    except InvalidParameterError as error:
        raise argparse.ArgumentTypeError(f"expected a positive integer or a comma list of distinct ones: {error}") from None


def finite_float(text: str) -> float:
    try:
        return number()(float(text))
    except (ValueError, InvalidParameterError):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}") from None


class UserErrorParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line + exit 2, like every other user error
        raise UserError(f"{self.prog}: {message}")


def check_output(output: str, what: str = "--output") -> None:
    """Fail before Spark starts when ``output`` (a folder or prefix for small files) cannot be written: see
    ``destinations.check_before_spark``; URIs other than local and S3 are checked once Spark runs."""
    from .destinations import Destination, check_before_spark

    check_before_spark([Destination(output, what)])


def check_local_output(output: str, what: str = "--output") -> None:
    """A local ``output`` must be a folder, or be creatable under the nearest existing folder, writable by us."""
    from .destinations import check_local, is_local

    if is_local(output):
        check_local(output, what)


def exit_code_of(run: Callable[[], int]) -> int:
    """Run a command: its exit code, or one line on stderr and exit code 2 for a ``UserError``, 3 for a
    ``TrainingFailedError``, 4 for an ``OutputWriteError``."""
    try:
        return run()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingFailedError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    except OutputWriteError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_OUTPUT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


