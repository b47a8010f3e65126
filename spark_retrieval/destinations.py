"""Where a command writes: every destination checked the way it will be written, before any work, and a
local fallback folder for results that still cannot be written after the work.

Before the work (a failure is one ``DestinationError`` line, exit code 2, nothing computed):

- a local path (``/x``, ``x``, ``file:///x``): an existing folder, or creatable under its nearest existing
  folder; a probe file is created and removed there (permission bits do not stop root, so only a real write
  tells), and nothing else is left behind: a failed command leaves no empty output folder;
- ``s3://`` (``s3a://``, ``s3n://``) written through boto3 (reports, metrics, checkpoints): the bucket exists
  and a probe object can be put under the prefix and deleted;
- any other URI, and every URI written through Spark (splits, models, ``working_dir``): the Hadoop
  ``FileSystem`` of the URI resolves (``check_with_spark``, right after the session starts and before any data
  is read); an unknown scheme is Hadoop's ``No FileSystem for scheme "…"``.

After the work (``keep_locally``): files that could not be written go to ``./spark-retrieval-fallback-<UTC
time>/`` (the system's temporary folder when the current one is not writable) and an ``OutputWriteError``
names the destination, the reason and that folder: exit code 4.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Iterable, Mapping

from . import s3
from .errors import InvalidParameterError, OutputWriteError, UserError
from .storage import write_failure, write_local_atomically

FILES = "files"  # small files: local paths by Python, s3:// by boto3, other URIs through Hadoop
TABLES = "tables"  # DataFrames and saved models: Spark writes them, through Hadoop (local paths: the disk)
ARROW = "arrow"  # two-tower checkpoints: pyarrow (local paths, s3:// like boto3, other URIs like Hadoop)

PROBE_PREFIX = ".spark-retrieval-probe-"
FALLBACK_PREFIX = "spark-retrieval-fallback-"


class DestinationError(InvalidParameterError):
    """A destination that cannot be written, found before the work started."""


@dataclass(frozen=True)
class Destination:
    uri: str
    what: str = "--output"  # how the error line names it: "--output", "conf.yaml: output:"
    kind: str = FILES


def is_local(uri: str) -> bool:
    return uri.startswith("file:") or "://" not in uri


def local_path(uri: str) -> str:
    """``file:///x`` / ``file:/x`` / ``x`` → an absolute local path."""
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    elif uri.startswith("file:"):
        uri = uri[len("file:"):]
    return os.path.abspath(uri)


def uses_boto3(destination: Destination) -> bool:
    return s3.is_s3_uri(destination.uri) and destination.kind in (FILES, ARROW)


def check_before_spark(destinations: Iterable[Destination]) -> None:
    """Every check that needs no Spark: local folders and S3 prefixes (seconds at most)."""
    for destination in destinations:
        if is_local(destination.uri):
            check_local(destination.uri, destination.what)
        elif uses_boto3(destination):
            check_s3(destination.uri, destination.what)


def check_with_spark(spark, destinations: Iterable[Destination]) -> None:
    """The rest, right after Spark starts and before any data is read: each other URI's Hadoop filesystem."""
    for destination in destinations:
        if not is_local(destination.uri) and not uses_boto3(destination):
            check_hadoop(spark, destination.uri, destination.what)


def check_local(uri: str, what: str = "--output") -> None:
    """A local folder we can create and write (without creating it: a failed command leaves nothing)."""
    path = local_path(uri)
    if os.path.exists(path) and not os.path.isdir(path):
        raise DestinationError(f"{what} {uri} is a file, not a folder")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise DestinationError(f"{what} {uri} cannot be created: {existing} is a file")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=PROBE_PREFIX)
    except OSError as error:
        raise DestinationError(f"{what} {uri} is not writable: {error.strerror or error} ({existing})") from None
    os.close(handle)
    os.remove(probe)


def check_s3(uri: str, what: str = "--output") -> None:
    try:
        s3.probe_prefix(uri)
    except UserError as error:  # its message names the URI (bucket or prefix) and the reason
        raise DestinationError(f"{what} {error}") from None


def check_hadoop(spark, uri: str, what: str = "--output") -> None:
    """The URI's Hadoop filesystem resolves: its scheme is known and its client can be created."""
    jvm = spark.sparkContext._jvm
    try:
        jvm.org.apache.hadoop.fs.Path(uri).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    except Exception as error:  # noqa: BLE001 - Py4JJavaError of any kind: the reason is its first line
        raise DestinationError(f"{what} {uri} cannot be written: {java_reason(error)}") from None


def java_reason(error: BaseException) -> str:
    java = getattr(error, "java_exception", None)
    if java is None:
        return " ".join(str(error).split()) or type(error).__name__
    message = str(java.getMessage() or "").strip()
    first = message.splitlines()[0] if message else ""
    return f"{java.getClass().getSimpleName()}: {first}" if first else java.getClass().getSimpleName()


# -- after the work: keep what could not be written --------------------------------------------------


def fallback_folder() -> str:
    """A new local folder for results that could not be written where asked: in the current folder, else
    in the system's temporary folder."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    last = None
    for parent in (os.getcwd(), tempfile.gettempdir()):
        folder = os.path.join(parent, f"{FALLBACK_PREFIX}{stamp}")
        if os.path.exists(folder):
            folder = f"{folder}-{uuid.uuid4().hex[:6]}"
        try:
            os.makedirs(folder)
            return folder
        except OSError as error:
            last = error
    raise last


def failure_reason(error: BaseException) -> str:
    reason = write_failure(error)
    if reason is None:
        text = str(error).strip()
        reason = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
    return reason


def keep_locally(files: Mapping[str, bytes], destination: str, error: BaseException, what: str = "the results") -> OutputWriteError:
    """Write ``files`` (relative name → bytes) to a fresh fallback folder; the ``OutputWriteError`` to raise
    names ``destination``, why it failed (``error``) and where the files are now."""
    reason = failure_reason(error)
    try:
        folder = fallback_folder()
        for name, data in files.items():
            write_local_atomically(os.path.join(folder, name), data)
    except OSError as local:
        return OutputWriteError(
            f"could not write {destination}: {reason}; {what} could not be kept locally either "
            f"({local.strerror or local})",
            destination=destination,
        )
    return OutputWriteError(
        f"could not write {destination}: {reason}; {what} are kept in {folder}/ (copy them from there)",
        destination=destination,
        fallback=folder,
    )
