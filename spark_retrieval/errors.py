"""User-facing errors. The CLI turns every ``UserError`` into one line on stderr and exit code 2, a
``TrainingFailedError`` into exit code 3 and an ``OutputWriteError`` into exit code 4."""


class UserError(Exception):
    """A problem the user can fix (bad input, bad parameter); never a bug in the library."""

    exit_code = 2


class InvalidParameterError(UserError, ValueError):
    """A parameter value outside its allowed range or of the wrong kind."""


class DataNotFoundError(UserError, FileNotFoundError):
    """A path, file or dataset that does not exist."""


class MalformedDataError(UserError, ValueError):
    """Input data that cannot be parsed or violates the schema (names file/column/line where known)."""


class EmptyDataError(UserError, ValueError):
    """Input that parses but holds nothing to work with."""


class DownloadError(UserError):
    """A download that failed or whose checksum does not match."""


class MissingDependencyError(UserError, ImportError):
    """An optional dependency (torch, horovod, ...) that is not installed."""


class TrainingFailedError(RuntimeError):
    """Distributed training stopped because one of its processes failed (killed, crashed, lost its peers).

    Not a ``UserError``: the input was fine. ``rank`` and ``exit_code`` name the first process seen to
    fail (None when the backend does not say), ``epoch`` the 1-based epoch that was running (None when
    unknown), ``checkpoint`` the file holding the last completed epoch (None without checkpoints):
    fitting again with the same ``checkpoint_dir`` resumes from it.
    """

    def __init__(
        self,
        message: str,
        *,
        rank: int | None = None,
        exit_code: int | None = None,
        epoch: int | None = None,
        checkpoint: str | None = None,
    ):
        super().__init__(message)
        self.rank = rank
        self.exit_code = exit_code
        self.epoch = epoch
        self.checkpoint = checkpoint


class OutputWriteError(RuntimeError):
    """The work is done but its output could not be written (a disk filled, credentials expired, a bucket
    policy changed during the run): the message names the destination and the reason, in one line.

    Not a ``UserError``: the destinations were checked before the work (exit 2 when one fails there).
    ``destination`` is what could not be written; ``fallback`` the local folder that holds the results
    instead (None when nothing could be kept there, e.g. a model that lives in Spark on a cluster).
    """

    exit_code = 4

    def __init__(self, message: str, *, destination: str | None = None, fallback: str | None = None):
        super().__init__(message)
        self.destination = destination
        self.fallback = fallback
