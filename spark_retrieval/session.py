"""Spark session handling: reuse the active session (spark-submit, notebooks) or build a local one."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

from pyspark.sql import SparkSession

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

    When a session already exists (``spark-submit``, a notebook, a test fixture) it is returned as is and
    ``master``/``conf`` are ignored, so library code never fights the cluster's own configuration.
    Otherwise ``master`` defaults to ``local[*]`` and ``conf`` overrides the local defaults.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    master = master or os.environ.get("SPARK_RETRIEVAL_MASTER", "local[*]")
    settings = _local_defaults(master) if master.startswith("local") else {}
    settings.update(conf or {})
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARK_RETRIEVAL_LOG_LEVEL", "ERROR"))
    return spark
