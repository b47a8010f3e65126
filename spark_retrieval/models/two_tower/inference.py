"""Tower outputs for a whole DataFrame with ``mapInPandas``: the weights travel as a broadcast, vectors stay distributed."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from .network import build_network
from .schema import FeatureSchema, encoded_column
from .state import state_from_bytes

VECTOR = "vector"


def embed(frame: DataFrame, spec: dict[str, Any], state: Any, tower: str, keep: list[str]) -> DataFrame:
    """``keep`` columns plus ``vector`` (``array<float>``): the ``tower`` ("user"/"item") output of each row.

    ``frame`` holds the tower's encoded input columns; ``state`` is a broadcast of the weights' bytes.
    """
    schema = FeatureSchema.from_dict(spec["schema"])
    inputs = [encoded_column(f) for f in schema.tower(tower)]
    output_schema = T.StructType(
        [frame.schema[c] for c in keep] + [T.StructField(VECTOR, T.ArrayType(T.FloatType(), False), False)]
    )

    def compute(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        # One task per core: more intra-op threads would only fight the other tasks.
        torch.set_num_threads(1)
        network = build_network(spec)
        network.load_state_dict(state_from_bytes(state.value))
        network.eval()
        forward = network.user_vectors if tower == "user" else network.item_vectors
        with torch.no_grad():
            for batch in frames:
                if batch.empty:
                    continue
                vectors = forward({c: torch.from_numpy(column_array(batch[c])) for c in inputs}).numpy()
                result = batch[keep].copy()
                result[VECTOR] = list(vectors.astype(np.float32))
                yield result

    return frame.select(*dict.fromkeys(keep + inputs)).mapInPandas(compute, output_schema)


def column_array(column: pd.Series) -> np.ndarray:
    """An int column → 1-d int64; a column of fixed-width int arrays → 2-d int64."""
    if column.dtype == object:
        return np.stack(column.to_numpy()).astype(np.int64)
    return column.to_numpy().astype(np.int64)
