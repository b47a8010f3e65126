"""Paths on any Hadoop filesystem (local, HDFS, S3): existence checks, small text files, atomic publish.

Everything goes through the JVM's Hadoop ``FileSystem`` so the same code works for ``/tmp/x``,
``file:///tmp/x``, ``hdfs://…`` and ``s3a://…`` alike.
"""

from __future__ import annotations

import contextlib
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


def delete_path(spark: SparkSession, path: str) -> None:
    fs, hpath = _hadoop_path(spark, path)
    if fs.exists(hpath):
        fs.delete(hpath, True)


def write_text(spark: SparkSession, path: str, text: str) -> None:
    fs, hpath = _hadoop_path(spark, path)
    stream = fs.create(hpath, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def read_text(spark: SparkSession, path: str) -> str:
    fs, hpath = _hadoop_path(spark, path)
    jvm = spark.sparkContext._jvm
    stream = fs.open(hpath)
    try:
        data = jvm.org.apache.commons.io.IOUtils.toByteArray(stream)
    finally:
        stream.close()
    return bytes(data).decode("utf-8")


@contextlib.contextmanager
def atomic_directory(spark: SparkSession, path: str, overwrite: bool = True) -> Iterator[str]:
    """Yield a temporary sibling directory; on success replace ``path`` with it, on failure remove it.

    Readers never see a half-written ``path``: the old content stays until the new one is complete.
    """
    fs, target = _hadoop_path(spark, path)
    if fs.exists(target) and not overwrite:
        from .errors import UserError

        raise UserError(f"output path already exists: {path} (pass overwrite=True to replace it)")
    target = fs.makeQualified(target)
    staging = target.getParent().suffix(f"/.{target.getName()}.tmp-{uuid.uuid4().hex[:12]}")
    staging_path = staging.toString()
    try:
        yield staging_path
    except BaseException:
        fs.delete(staging, True)
        raise
    backup = None
    if fs.exists(target):
        backup = target.getParent().suffix(f"/.{target.getName()}.old-{uuid.uuid4().hex[:12]}")
        fs.rename(target, backup)
    if not fs.rename(staging, target):
        if backup is not None:
            fs.rename(backup, target)
        raise OSError(f"could not publish {staging_path} to {path}")
    if backup is not None:
        fs.delete(backup, True)


# -- small files (configs, reports, metrics) without Spark: local paths and s3:// through boto3 ---------


def read_small_text(uri: str) -> str:
    """A small text file from a local path or an ``s3://`` URI (works before Spark starts)."""
    from . import s3
    from .errors import DataNotFoundError, UserError

    if s3.is_s3_uri(uri):
        return s3.read_bytes(uri).decode("utf-8")
    if "://" in uri and not uri.startswith("file://"):
        raise UserError(f"{uri}: small files must be a local path or an s3:// URI")
    path = uri.removeprefix("file://")
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except FileNotFoundError:
        raise DataNotFoundError(f"file not found: {uri}") from None


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
        write_text(spark or SparkSession.getActiveSession(), uri, text)
    else:
        write_local_atomically(uri.removeprefix("file://"), text.encode("utf-8"))
