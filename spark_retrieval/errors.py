"""User-facing errors. The CLI turns every ``UserError`` into one line on stderr and exit code 2."""


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
