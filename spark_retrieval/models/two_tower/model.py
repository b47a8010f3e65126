"""The model every two-tower family returns: distributed embeddings and exact top-K retrieval.

Tables saved with it: ``vocabulary_<name>`` (``value, index``), ``items`` (the catalog with its encoded
item features), ``users`` (raw user side features, when the schema uses any), ``seen_items`` (each
user's train items, for ``exclude_seen``) and ``state`` (the torch weights as binary chunks).
``metadata["network"]`` rebuilds the network; ``metadata["training"]`` records how it was trained.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ...columns import ITEM_ID, QUERY_ID, USER_ID
from ..base import RetrievalModel, require_columns
from .inference import VECTOR, embed
from .network import TwoTowerNetwork, build_network
from .params import TwoTowerParams
from .schema import CONTEXT, FeatureSchema
from .state import bytes_from_table, state_from_bytes
from .training_data import SEEN_ITEMS, FeatureTables, encode_user_inputs
from .vocabulary import vocabulary_values

EXCLUDE = "_exclude"


class TwoTowerModel(RetrievalModel, TwoTowerParams):
    STATE = "state"
    ITEMS = "items"
    USERS = "users"
    SEEN = "seen_items"
    VOCABULARY_PREFIX = "vocabulary_"

    def __init__(self, tables: dict[str, DataFrame] | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(tables=tables, metadata=metadata)
        self._setDefault(exclude_seen=True, verbose=True)
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
        return embed(self.tables[self.ITEMS], self.network_spec, self._state_broadcast(), "item", keep=[ITEM_ID])

    def user_embeddings(self, queries: DataFrame) -> DataFrame:
        """``[query_id,] user_id, vector`` per row of ``queries`` (``user_id`` and the context columns)."""
        require_columns(queries, (USER_ID, *self.context_columns()), "queries")
        keep = ([QUERY_ID] if QUERY_ID in queries.columns else []) + [USER_ID]
        frame = queries.select(*dict.fromkeys(keep + list(self.context_columns())))
        encoded = encode_user_inputs(frame, self._feature_tables(), keep=keep)
        return embed(encoded, self.network_spec, self._state_broadcast(), "user", keep=keep)

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

    def _state_broadcast(self):
        if "state_broadcast" not in self._cache:
            self._cache["state_broadcast"] = _spark().sparkContext.broadcast(self._state_bytes())
        return self._cache["state_broadcast"]

    def _feature_tables(self) -> FeatureTables:
        if "feature_tables" not in self._cache:
            prefix = self.VOCABULARY_PREFIX
            vocabularies = {n[len(prefix):]: t for n, t in self.tables.items() if n.startswith(prefix)}
            sc = _spark().sparkContext
            broadcasts = {name: sc.broadcast(vocabulary_values(table)) for name, table in vocabularies.items()}
            self._cache["feature_tables"] = FeatureTables(
                schema=self.schema,
                vocabularies=vocabularies,
                broadcasts=broadcasts,
                sizes=dict(self.network_spec["vocabulary_sizes"]),
                items=self.tables[self.ITEMS],
                users=self.tables.get(self.USERS),
            )
        return self._cache["feature_tables"]

    def unpersist(self) -> None:
        super().unpersist()
        tables = self._cache.pop("feature_tables", None)
        broadcasts = list(tables.broadcasts.values()) if tables else []
        broadcasts += [self._cache.pop("state_broadcast")] if "state_broadcast" in self._cache else []
        for broadcast in broadcasts:
            broadcast.unpersist()


def _spark() -> SparkSession:
    return SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()

