"""Torch state ↔ bytes ↔ a table of binary chunks, so a model's weights are saved like any other table."""

from __future__ import annotations

import hashlib
import io

import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

CHUNK = "chunk"
DATA = "data"
CHUNK_BYTES = 16 << 20
STATE_SCHEMA = T.StructType([T.StructField(CHUNK, T.IntegerType(), False), T.StructField(DATA, T.BinaryType(), False)])


def state_to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def state_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def parameter_hash(module: torch.nn.Module) -> str:
    """SHA-256 over every tensor of the module's state, in order: equal hashes ⇔ identical parameters."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def state_table(spark: SparkSession, data: bytes) -> DataFrame:
    chunks = [(i, bytearray(data[start : start + CHUNK_BYTES])) for i, start in enumerate(range(0, len(data), CHUNK_BYTES))]
    return spark.createDataFrame(chunks, STATE_SCHEMA)


def bytes_from_table(table: DataFrame) -> bytes:
    return b"".join(bytes(row[DATA]) for row in table.orderBy(CHUNK).collect())
