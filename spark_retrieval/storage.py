"""Paths on any Hadoop filesystem (local, HDFS, S3): existence checks, small text files, atomic publish.

Everything goes through the JVM's Hadoop ``FileSystem`` so the same code works for ``/tmp/x``,
``file:///tmp/x``, ``hdfs://…`` and ``s3a://…`` alike.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from typing import Iterator

from pyspark.sql import SparkSession


def _hadoop_path(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, hpath


def path_exists(spark: SparkSession, path: str) -> bool:
    fs, hpath = _hadoop_path(spark, path)
    return bool(fs.exists(hpath))


def write_text(spark: SparkSession, path: str, text: str) -> None:
    write_bytes(spark, path, text.encode("utf-8"))


def write_bytes(spark: SparkSession, path: str, data: bytes) -> None:
    fs, hpath = _hadoop_path(spark, path)
    stream = fs.create(hpath, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def replace_text(spark: SparkSession, path: str, text: str) -> None:
    replace_bytes(spark, path, text.encode("utf-8"))


def replace_bytes(spark: SparkSession, path: str, data: bytes) -> None:
    """Write ``path`` through a hidden sibling renamed over it, so readers see the old or the new file whole
    (an atomic rename on HDFS and local disks; object stores copy, so there it is only as good as the store)."""
    fs, target = _hadoop_path(spark, path)
    target = fs.makeQualified(target)
    staging = _sibling(target, STAGING)
    write_bytes(spark, staging.toString(), data)
    try:
        jvm = spark.sparkContext._jvm
        context = jvm.org.apache.hadoop.fs.FileContext.getFileContext(target.toUri(), spark.sparkContext._jsc.hadoopConfiguration())
        options = spark.sparkContext._gateway.new_array(jvm.org.apache.hadoop.fs.Options.Rename, 1)
        options[0] = jvm.org.apache.hadoop.fs.Options.Rename.OVERWRITE
        context.rename(staging, target, options)
    except BaseException:
        fs.delete(staging, False)
        raise


def read_text(spark: SparkSession, path: str) -> str:
    fs, hpath = _hadoop_path(spark, path)
    jvm = spark.sparkContext._jvm
    stream = fs.open(hpath)
    try:
        data = jvm.org.apache.commons.io.IOUtils.toByteArray(stream)
    finally:
        stream.close()
    return bytes(data).decode("utf-8")


STAGING, BACKUP = "tmp", "old"


def _sibling(target, kind: str):
    """``.<name>.<kind>-<random>`` beside ``target``: hidden from readers of the parent and from Spark."""
    return target.getParent().suffix(f"/.{target.getName()}.{kind}-{uuid.uuid4().hex[:12]}")


def _siblings(fs, target, kind: str) -> list:
    """The ``.<name>.<kind>-*`` entries beside ``target``, oldest first."""
    prefix = f".{target.getName()}.{kind}-"
    parent = target.getParent()
    if not fs.exists(parent):
        return []
    found = [status for status in fs.listStatus(parent) if status.getPath().getName().startswith(prefix)]
    return [status.getPath() for status in sorted(found, key=lambda status: status.getModificationTime())]


def recover_interrupted_publish(spark: SparkSession, path: str) -> None:
    """Undo a publish that was killed between its two renames: bring the previous copy back to ``path``.

    Publishing renames the old ``path`` aside, then the new copy in. A process killed in between leaves
    ``path`` missing and the old copy as ``.<name>.old-*``; this puts the newest such copy back.
    """
    fs, target = _hadoop_path(spark, path)
    target = fs.makeQualified(target)
    backups = _siblings(fs, target, BACKUP)
    if backups and not fs.exists(target):
        fs.rename(backups[-1], target)


@contextlib.contextmanager
def atomic_directory(spark: SparkSession, path: str, overwrite: bool = True) -> Iterator[str]:
    """Yield a temporary sibling directory; on success replace ``path`` with it, on failure remove it.

    Readers never see a half-written ``path``: the old content stays until the new one is complete, and a
    process killed while writing leaves the old ``path`` as it was (its staging directory stays beside it,
    hidden, until the next successful publish to ``path`` removes it). One writer per ``path`` at a time.
    """
    recover_interrupted_publish(spark, path)
    fs, target = _hadoop_path(spark, path)
    if fs.exists(target) and not overwrite:
        from .errors import UserError

        raise UserError(f"output path already exists: {path} (pass overwrite=True to replace it)")
    target = fs.makeQualified(target)
    staging = _sibling(target, STAGING)
    staging_path = staging.toString()
    try:
        yield staging_path
    except BaseException:
        fs.delete(staging, True)
        raise
    backup = None
    if fs.exists(target):
        backup = _sibling(target, BACKUP)
        if not fs.rename(target, backup):
            fs.delete(staging, True)
            raise OSError(f"could not move the previous {path} aside to publish the new one")
    if not fs.rename(staging, target):
        if backup is not None:
            fs.rename(backup, target)
        raise OSError(f"could not publish {staging_path} to {path}")
    # The previous copy, and whatever killed writers left beside ``path``.
    for leftover in _siblings(fs, target, BACKUP) + _siblings(fs, target, STAGING):
        fs.delete(leftover, True)


def list_names(spark: SparkSession, path: str) -> list[str]:
    """The names directly inside the folder ``path``, hidden ``.*`` entries left out, sorted."""
    fs, folder = _hadoop_path(spark, path)
    names = (status.getPath().getName() for status in fs.listStatus(folder))
    return sorted(name for name in names if not name.startswith("."))


def data_files(spark: SparkSession, path: str) -> dict[str, int]:
    """Every data file under ``path`` (relative name → size in bytes), without the hidden ``.*`` / ``_*``
    files (checksums, ``_SUCCESS``) that Spark does not read either. Listed on the driver: no Spark job."""
    fs, root = _hadoop_path(spark, path)
    root = fs.makeQualified(root)
    prefix = root.toString().rstrip("/") + "/"
    files = {}
    listing = fs.listFiles(root, True)
    while listing.hasNext():
        status = listing.next()
        relative = status.getPath().toString()[len(prefix):]
        if not any(part.startswith((".", "_")) for part in relative.split("/")):
            files[relative] = int(status.getLen())
    return files


READ_FAILURE_MARKERS = (
    "FAILED_READ_FILE",
    "PATH_NOT_FOUND",
    "UNABLE_TO_INFER_SCHEMA",
    "not a Parquet file",
    "FileNotFoundException",
    "AccessDeniedException",
    "Permission denied",
    "ChecksumException",
)


def read_failure(error: BaseException) -> str | None:
    """For a Spark error caused by a missing, unreadable or wrongly formatted file, a one-line reason; else None.

    The reason is the innermost Java cause's first line (``file:/x is not a Parquet file …``), without
    Spark's ``[ERROR_CLASS]`` prefix and ``SQLSTATE`` suffix. Other errors (bugs) are left alone.
    """
    messages = [str(error)]
    java = getattr(error, "java_exception", None)
    while java is not None:
        messages.append(f"{java.getClass().getName()}: {java.getMessage()}")
        cause = java.getCause()
        java = None if cause is None or cause.equals(java) else cause
    if not any(marker in message for message in messages for marker in READ_FAILURE_MARKERS):
        return None
    for message in reversed(messages):  # the innermost cause that says something
        text = re.sub(r"^[\w.$]+(Exception|Error): ", "", message.strip())
        text = re.sub(r"^\[[A-Z_.]+\] ", "", text.splitlines()[0] if text else "")
        text = re.sub(r"\s*SQLSTATE: \w+\.?$", "", text).strip()
        if text and text != "null":
            return text
    return "unreadable"


def write_failure(error: BaseException) -> str | None:
    """For an error raised while writing — the OS, S3 or a Hadoop filesystem refusing a file or folder — a
    one-line reason naming what was refused; else None (a bug, or a Spark job whose computation failed).

    ``OSError`` (pyarrow's errors included) and ``UserError`` (``S3Error``) are write failures; a Spark/Hadoop
    error is one when a ``java.io.IOException`` is in its chain of causes (its first line is the reason).
    """
    from .errors import UserError

    if isinstance(error, UserError):
        return " ".join(str(error).split())
    if isinstance(error, OSError):
        reason = error.strerror or str(error) or type(error).__name__
        where = error.filename if isinstance(error.filename, str) else None
        return " ".join((f"{reason} ({where})" if where else reason).split())
    java = getattr(error, "java_exception", None)
    if java is None:
        return None
    from pyspark import SparkContext

    jvm = SparkContext._jvm
    if jvm is None:
        return None
    io_exception = jvm.java.lang.Class.forName("java.io.IOException")
    found = None
    while java is not None:
        if io_exception.isInstance(java):
            found = java  # the innermost one says the most
        cause = java.getCause()
        java = None if cause is None or cause.equals(java) else cause
    if found is None:
        return None
    text = str(found.getMessage() or "").strip()
    text = re.sub(r"^\[[A-Z_.]+\] ", "", text.splitlines()[0] if text else "")
    text = re.sub(r"\s*SQLSTATE: \w+\.?$", "", text).strip()
    name = found.getClass().getSimpleName()
    return f"{name}: {text}" if text and text != "null" else name


# -- small files (configs, reports, metrics) without Spark: local paths and s3:// through boto3 ---------


def read_small_text(uri: str) -> str:
    """A small text file from a local path or an ``s3://`` URI (works before Spark starts)."""
    from . import s3
    from .errors import DataNotFoundError, MalformedDataError, UserError

    if "://" in uri and not uri.startswith("file://") and not s3.is_s3_uri(uri):
        raise UserError(f"{uri}: small files must be a local path or an s3:// URI")
    if s3.is_s3_uri(uri):
        data = s3.read_bytes(uri)  # its errors already name the URI
    else:
        try:
            with open(uri.removeprefix("file://"), "rb") as stream:
                data = stream.read()
        except FileNotFoundError:
            raise DataNotFoundError(f"file not found: {uri}") from None
        except IsADirectoryError:
            raise DataNotFoundError(f"{uri} is a folder, not a file") from None
        except PermissionError:
            raise DataNotFoundError(f"{uri}: permission denied") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedDataError(f"{uri}: not UTF-8 text (byte {error.start})") from None


def write_local_atomically(path: str, data: bytes) -> None:
    """Write ``path`` via a temporary sibling and ``os.replace``: readers see the old or the new file, whole."""
    import os
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would hide reports from other users
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_small_text(uri: str, text: str, spark: SparkSession | None = None) -> None:
    """Write a small text file: ``s3://`` through boto3, other URIs through Spark's filesystem, paths locally."""
    from . import s3

    if s3.is_s3_uri(uri):
        s3.write_bytes(uri, text.encode("utf-8"))
    elif "://" in uri and not uri.startswith("file://"):
        replace_text(spark or SparkSession.getActiveSession(), uri, text)
    else:
        write_local_atomically(uri.removeprefix("file://"), text.encode("utf-8"))
