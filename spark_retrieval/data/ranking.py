"""Dense numbers for the distinct values of a column, computed by Spark without collecting the values.

The distinct non-null values are sorted with a range partitioning (partition p holds only values below those
of partition p + 1), each partition's row count is computed, and a value's number is its partition's offset
(the rows of the partitions before it) plus its position within its partition. Only one small row per
partition reaches the driver, never the values.
"""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

_PARTITION = "_partition"


def dense_numbers(
    values: DataFrame, column: str, number: str, start: int = 0, number_type: str = "long"
) -> tuple[DataFrame, int]:
    """The distinct non-null values of ``values[column]`` numbered ``start``, ``start + 1``, … in ascending order
    (Spark's ordering) → (the table ``number`` (``number_type``), ``column``, persisted and materialised; its row
    count)."""
    ordered = values.select(column).where(F.col(column).isNotNull()).distinct().orderBy(column)
    ranked = ordered.withColumn(_PARTITION, F.spark_partition_id()).persist(StorageLevel.MEMORY_AND_DISK)
    # One row per partition of the sort (spark.sql.shuffle.partitions at most): the only thing collected.
    counts = ranked.groupBy(_PARTITION).agg(F.count(F.lit(1)).alias("n")).collect()
    offsets, total = {}, start
    for partition, size in sorted((row[_PARTITION], row["n"]) for row in counts):
        offsets[partition] = total
        total += size
    offset = F.element_at(F.create_map(*[F.lit(v) for pair in offsets.items() for v in pair]), F.col(_PARTITION)) if offsets else F.lit(start)
    within = F.row_number().over(Window.partitionBy(_PARTITION).orderBy(column)) - 1
    table = ranked.select((within + offset).cast(number_type).alias(number), column).persist(StorageLevel.MEMORY_AND_DISK)
    size = table.count()
    ranked.unpersist()
    return table, size
