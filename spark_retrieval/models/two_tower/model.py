"""The model every two-tower family returns: distributed embeddings and exact top-K retrieval.

Tables saved with it: ``vocabulary_<name>`` (``value, index``), ``items`` (the catalog with its encoded
item features), ``users`` (raw user side features, when the schema uses any), ``seen_items`` (each
user's train items, for ``exclude_seen``) and ``state`` (the torch weights as binary chunks).
``metadata["network"]`` rebuilds the network; ``metadata["training"]`` records how it was trained.

Tower outputs for a whole DataFrame are computed with ``mapInPandas`` (``embed``): each Python worker reads the
weights from the ``state`` table's files itself (the driver only lists their names), and the vectors stay
distributed. A fitted model's ``state`` reads the file rank 0 wrote; a loaded one, its saved parquet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ...columns import ITEM_ID, QUERY_ID, USER_ID, require_columns
from ...data.context import SEEN_ITEMS
from ..base import RetrievalModel
from .checkpoint import bytes_from_table, read_state_files, state_from_bytes
from .network import TwoTowerNetwork, build_network, pin_cpu_capability
from .schema import CONTEXT, FeatureSchema, encoded_column
from .training_data import FeatureTables, encode_user_inputs

VECTOR = "vector"
EXCLUDE = "_exclude"


class TwoTowerModel(RetrievalModel):
    """Base of the family models (``DSSMModel``, ``SimpleXModel``), whose family Params mixin declares the
    parameters (``exclude_seen`` among them) and their defaults."""

    STATE = "state"
    ITEMS = "items"
    USERS = "users"
    SEEN = "seen_items"
    VOCABULARY_PREFIX = "vocabulary_"

    def __init__(self, tables: dict[str, DataFrame] | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(tables=tables, metadata=metadata)
        self._cache: dict[str, Any] = {}

    # -- what the model is ---------------------------------------------------------------------------
    @property
    def network_spec(self) -> dict[str, Any]:
        return self.metadata["network"]

    @property
    def schema(self) -> FeatureSchema:
        return FeatureSchema.from_dict(self.network_spec["schema"])

    @property
    def training_history(self) -> list[dict[str, float]]:
        """Loss and samples/s of every epoch (those of an earlier, resumed run included)."""
        return list(self.metadata.get("training", {}).get("history", []))

    def context_columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.schema.user if f.source == CONTEXT and f.name != USER_ID)

    def query_columns(self) -> tuple[str, ...]:
        return (QUERY_ID, USER_ID, *self.context_columns())

    def network(self) -> TwoTowerNetwork:
        """The trained torch network, on the driver (for inspection or export)."""
        network = build_network(self.network_spec)
        network.load_state_dict(state_from_bytes(self._state_bytes()))
        return network.eval()

    # -- embeddings ----------------------------------------------------------------------------------
    def item_embeddings(self) -> DataFrame:
        """``item_id, vector: array<float>`` for every catalog item (computed on the executors)."""
        return embed(self.tables[self.ITEMS], self.network_spec, self._state_source(), "item", keep=[ITEM_ID])

    def user_embeddings(self, queries: DataFrame) -> DataFrame:
        """``[query_id,] user_id, vector`` per row of ``queries`` (``user_id`` and the context columns)."""
        require_columns(queries, (USER_ID, *self.context_columns()), "queries")
        keep = ([QUERY_ID] if QUERY_ID in queries.columns else []) + [USER_ID]
        frame = queries.select(*dict.fromkeys(keep + list(self.context_columns())))
        encoded = encode_user_inputs(frame, self._feature_tables(), keep=keep)
        return embed(encoded, self.network_spec, self._state_source(), "user", keep=keep)

    def _recommend(self, queries: DataFrame, k: int) -> DataFrame:
        from ...retrieval.topk import top_k_inner_product

        users = self.user_embeddings(queries.select(*self.query_columns()))
        exclude = None
        if self.get("exclude_seen"):
            seen = self.tables[self.SEEN].select(USER_ID, F.col(SEEN_ITEMS).alias(EXCLUDE))
            users = users.join(seen, USER_ID, "left").withColumn(
                EXCLUDE, F.coalesce(F.col(EXCLUDE), F.array().cast("array<long>"))
            )
            exclude = EXCLUDE
        return top_k_inner_product(
            users.select(QUERY_ID, VECTOR, *([EXCLUDE] if exclude else [])),
            self.item_embeddings(),
            k,
            exclude_column=exclude,
        )

    # -- cached driver-side state --------------------------------------------------------------------
    def _state_bytes(self) -> bytes:
        if "state" not in self._cache:
            self._cache["state"] = bytes_from_table(self.tables[self.STATE])
        return self._cache["state"]

    def _state_source(self) -> "StateFiles | Any":
        """What the embedding tasks load the weights from: the ``state`` table's files; a table with no files
        behind it (built in memory) is collected and broadcast instead."""
        if "state_source" not in self._cache:
            files = self.tables[self.STATE].inputFiles()  # file names only: one per Spark part of the state table
            if files:
                self._cache["state_source"] = StateFiles(tuple(files))
            else:
                self._cache["state_source"] = _spark().sparkContext.broadcast(self._state_bytes())
        return self._cache["state_source"]

    def _feature_tables(self) -> FeatureTables:
        if "feature_tables" not in self._cache:
            prefix = self.VOCABULARY_PREFIX
            vocabularies = {n[len(prefix):]: t for n, t in self.tables.items() if n.startswith(prefix)}
            self._cache["feature_tables"] = FeatureTables(
                schema=self.schema,
                vocabularies=vocabularies,
                sizes=dict(self.network_spec["vocabulary_sizes"]),
                items=self.tables[self.ITEMS],
                users=self.tables.get(self.USERS),
            )
        return self._cache["feature_tables"]

    def unpersist(self) -> None:
        super().unpersist()
        self._cache.pop("feature_tables", None)  # its vocabularies and items are among self.tables
        source = self._cache.pop("state_source", None)
        if source is not None and not isinstance(source, StateFiles):
            source.unpersist()


@dataclass(frozen=True)
class StateFiles:
    """The weights' parquet files, read by each Python worker that needs them (``value``, like a broadcast)."""

    paths: tuple[str, ...]

    @property
    def value(self) -> bytes:
        return read_state_files(self.paths)


def _spark() -> SparkSession:
    return SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()


def embed(frame: DataFrame, spec: dict[str, Any], state: Any, tower: str, keep: list[str]) -> DataFrame:
    """``keep`` columns plus ``vector`` (``array<float>``): the ``tower`` ("user"/"item") output of each row.

    ``frame`` holds the tower's encoded input columns; ``state.value`` gives the weights' bytes where the task
    runs (``StateFiles``, or a broadcast).
    """
    schema = FeatureSchema.from_dict(spec["schema"])
    inputs = [encoded_column(f) for f in schema.tower(tower)]
    output_schema = T.StructType(
        [frame.schema[c] for c in keep] + [T.StructField(VECTOR, T.ArrayType(T.FloatType(), False), False)]
    )

    def compute(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        # One task per core: more intra-op threads would only fight the other tasks.
        pin_cpu_capability()  # Python workers run only this library's torch code: pinned before its first operation
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
