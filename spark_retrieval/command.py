"""What every command-line entry point shares (``spark-retrieval`` and ``jobs/*.py``): exit codes, the
error → exit code mapping, argument types and the checks of output destinations made before Spark starts."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from .errors import InvalidParameterError, TrainingFailedError, UserError
from .validation import integer, number

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


def positive_int(text: str) -> int:
    try:
        return integer(at_least=1)(int(text))
    except (ValueError, InvalidParameterError):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None


def finite_float(text: str) -> float:
    try:
        return number()(float(text))
    except (ValueError, InvalidParameterError):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}") from None


class UserErrorParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line + exit 2, like every other user error
        raise UserError(f"{self.prog}: {message}")


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


