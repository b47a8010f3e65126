"""Spark session handling: reuse the active session (spark-submit, notebooks) or build a local one."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Mapping

from pyspark.sql import SparkSession

from .errors import InvalidParameterError

DEFAULT_APP_NAME = "spark-retrieval"
LOG_CONFIG = Path(__file__).parent / "conf" / "log4j2.properties"


def _local_defaults(master: str) -> dict[str, str]:
    cores = os.cpu_count() or 2
    bind_address = os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")
    return {
        "spark.driver.host": bind_address,
        "spark.driver.bindAddress": bind_address,
        # Small local data: a few partitions per core beat the default 200 shuffle partitions.
        "spark.sql.shuffle.partitions": str(max(4, 4 * cores)),
        "spark.default.parallelism": str(max(4, 4 * cores)),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
        "spark.sql.adaptive.enabled": "true",
        "spark.driver.memory": os.environ.get("SPARK_RETRIEVAL_DRIVER_MEMORY", "6g"),
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()}",
    }


def get_spark(
    master: str | None = None,
    app_name: str = DEFAULT_APP_NAME,
    conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """Return the active SparkSession, or build a local one with loopback addresses and sane defaults.

    When a session already exists (a notebook, a test fixture) it is returned as is and ``master``/``conf``
    are ignored, so library code never fights the cluster's own configuration. Under ``spark-submit`` the
    submitted master and settings are kept (``master`` is ignored). Otherwise ``master`` defaults to
    ``local[*]`` and ``conf`` overrides the local defaults.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    submitted = _spark_submit_conf()
    if submitted is not None:
        # Launched by spark-submit: its --master and --conf win; local defaults only fill what it left unset.
        master = submitted.get("spark.master", "local[*]")
        settings = {k: v for k, v in _local_defaults(master).items() if k not in submitted} if master.startswith("local") else {}
        settings.update(conf or {})
        builder = SparkSession.builder.appName(submitted.get("spark.app.name", app_name))
    else:
        master = master or os.environ.get("SPARK_RETRIEVAL_MASTER", "local[*]")
        settings = _local_defaults(master) if master.startswith("local") else {}
        settings.update(conf or {})
        builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARK_RETRIEVAL_LOG_LEVEL", "ERROR"))
    return spark


def blas_in_use(spark: SparkSession) -> str:
    """Which BLAS MLlib (ALS) calls in this driver JVM: netlib's JNI wrapper with the system libraries the JVM
    has mapped (e.g. ``JNIBLAS (libblas.so.3, libopenblas-r0.3.21.so)``), or a Java fallback (``VectorBLAS``)."""
    jvm = spark._jvm
    name = getattr(getattr(jvm.org.apache.spark.ml.linalg, "BLAS$"), "MODULE$").nativeBLAS().getClass().getSimpleName()
    maps = Path(f"/proc/{jvm.java.lang.ProcessHandle.current().pid()}/maps")
    libraries = sorted({line.split()[-1].rsplit("/", 1)[-1] for line in maps.read_text().splitlines()
                        if "libopenblas" in line or "libblas" in line}) if maps.exists() else []
    return f"{name} ({', '.join(libraries)})" if libraries else name


MASTER_URL = re.compile(
    r"local(\[(\*|[1-9]\d*)(,[1-9]\d*)?\])?|local-cluster\[[1-9]\d*,\s*[1-9]\d*,\s*[1-9]\d*\]"
    r"|spark://\S+|yarn|k8s://\S+"
)
LOCAL_MASTER = re.compile(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?")


def check_master(master: str, what: str = "--master") -> None:
    """A Spark master URL Spark accepts (checked before Spark starts, which would fail with a JVM trace)."""
    if not MASTER_URL.fullmatch(master.strip()):
        raise InvalidParameterError(
            f"{what} {master!r} is not a Spark master URL (local, local[N], local[*], spark://host:port, yarn, k8s://…)"
        )


def local_task_slots(master: str) -> int | None:
    """Tasks a ``local`` / ``local[N]`` / ``local[*]`` master runs at once; None for a cluster master."""
    match = LOCAL_MASTER.fullmatch(master)
    if match is None:
        return None
    threads = match.group(1)
    if threads is None:
        return 1
    return (os.cpu_count() or 1) if threads == "*" else int(threads)


def task_slots(spark: SparkSession) -> int:
    """Tasks that run at once: the local master's threads, else the cluster's default parallelism."""
    return local_task_slots(spark.sparkContext.master) or spark.sparkContext.defaultParallelism


def _spark_submit_conf() -> dict[str, str] | None:
    """The configuration spark-submit passed to this Python driver, or None when not launched by it."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None
    from pyspark import SparkConf

    return dict(SparkConf().getAll())
