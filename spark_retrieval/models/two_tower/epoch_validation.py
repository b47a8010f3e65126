"""Validation after every epoch: the file the Spark side writes, and the score rank 0 computes from it.

With validation queries given to ``fit`` (``TwoTowerEstimator(validation_queries=…)``), Spark writes one
parquet folder of them (``write_validation_file``): each query's encoded user-tower inputs, its label items and
the user's train items, as item indices. After every epoch rank 0 embeds the queries and the whole catalog,
ranks the catalog exactly (train items and the unknown index left out, as ``recommend`` with
``exclude_seen`` does) and scores the top ``k`` with the evaluator's definitions of recall and NDCG
(``evaluation.per_query_metrics``). Training keeps the best epoch's weights and stops after ``patience``
epochs without a better score.

Size: rank 0 holds the validation queries' inputs and label/seen lists and one ``QUERY_BLOCK × items``
block of scores at a time, besides the catalog's vectors (items × vector size). The tuner's validation
queries are at most ``holdout`` per user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ...columns import ITEM_ID, QUERY_ID, USER_ID, require_columns
from ...data.context import SEEN_ITEMS, seen_items
from ...errors import EmptyDataError
from .schema import CONTEXT
from .shards import list_parquet_files, open_filesystem
from .training_data import FeatureTables, encode_user_inputs
from .vocabulary import INDEX, VALUE

VALIDATION_METRICS = ("ndcg", "recall")
LABELS = "_labels"
LABEL_COUNT = "_label_count"
SEEN = "_seen"
QUERY_BLOCK = 1024


def write_validation_file(
    queries: DataFrame, train: DataFrame | None, tables: FeatureTables, directory: str
) -> tuple[str, int]:
    """``queries`` (one row per (query, label item), with ``user_id`` and the context columns, like a split's
    test) → ``directory/validation``: one row per query, in ``query_id`` order. Returns the path and the number
    of queries. ``train``: the fitted interactions, whose items are left out of each user's ranking (None: none
    are). Labels absent from the item vocabulary map to the unknown index 0, which is never ranked, so such a
    label counts as a miss, as it does for ``evaluate``."""
    context = [f.name for f in tables.schema.user if f.source == CONTEXT and f.name != USER_ID]
    require_columns(queries, (QUERY_ID, USER_ID, ITEM_ID, *context), "validation queries")
    item_vocabulary = tables.vocabularies[next(f.vocabulary for f in tables.schema.item if f.name == ITEM_ID)]
    indices = item_vocabulary.select(F.col(VALUE).alias(ITEM_ID), F.col(INDEX))

    labelled = queries.select(QUERY_ID, ITEM_ID).dropDuplicates().join(indices, ITEM_ID, "left")
    labels = labelled.groupBy(QUERY_ID).agg(
        F.array_sort(F.collect_list(F.coalesce(F.col(INDEX), F.lit(0)))).alias(LABELS),
        F.count(F.lit(1)).cast("int").alias(LABEL_COUNT),
    )
    first = queries.select(QUERY_ID, USER_ID, *context).dropDuplicates([QUERY_ID])
    rows = encode_user_inputs(first, tables, keep=[QUERY_ID, USER_ID]).join(labels, QUERY_ID)
    nothing_seen = F.array().cast("array<int>")
    if train is None:
        rows = rows.withColumn(SEEN, nothing_seen)
    else:
        seen = (
            seen_items(train)
            .select(USER_ID, F.explode(SEEN_ITEMS).alias(ITEM_ID))
            .join(indices, ITEM_ID)
            .groupBy(USER_ID)
            .agg(F.array_sort(F.collect_list(INDEX)).alias(SEEN))
        )
        rows = rows.join(seen, USER_ID, "left").withColumn(SEEN, F.coalesce(F.col(SEEN), nothing_seen))
    rows = rows.drop(USER_ID)
    path = f"{directory}/validation"
    rows.repartition(1).sortWithinPartitions(QUERY_ID).write.mode("overwrite").parquet(path)
    count = sum(rows for _, rows in list_parquet_files(path))
    if count == 0:
        raise EmptyDataError("the validation queries given to fit are empty")
    return path, count


@dataclass
class ValidationSet:
    """The validation file on rank 0: user-tower inputs per query, labels and train items as index lists."""

    inputs: dict[str, torch.Tensor]
    labels: list[np.ndarray]
    label_counts: np.ndarray
    seen: list[np.ndarray]

    @classmethod
    def load(cls, path: str, user_columns: list[str]) -> "ValidationSet":
        fs, root = open_filesystem(path)
        table = pq.ParquetDataset(root, filesystem=fs).read().sort_by(QUERY_ID)
        inputs = {}
        for column in user_columns:
            values = table.column(column).combine_chunks()
            if pa.types.is_list(values.type):
                flat = values.flatten().to_numpy()
                inputs[column] = torch.from_numpy(flat.reshape(len(values), -1).astype(np.int64))
            else:
                inputs[column] = torch.from_numpy(values.to_numpy().astype(np.int64))
        return cls(
            inputs=inputs,
            labels=[np.asarray(v, dtype=np.int64) for v in table.column(LABELS).to_pylist()],
            label_counts=table.column(LABEL_COUNT).to_numpy().astype(np.int64),
            seen=[np.asarray(v, dtype=np.int64) for v in table.column(SEEN).to_pylist()],
        )

    def __len__(self) -> int:
        return len(self.labels)

    def score(self, network, item_inputs: dict[str, torch.Tensor], metric: str, k: int) -> float:
        """Mean ``metric``@``k`` of the queries: exact top-``k`` over every catalog item, train items excluded."""
        was_training = network.training
        network.eval()
        try:
            with torch.no_grad():
                items = network.item_vectors(item_inputs)
                total = 0.0
                for start in range(0, len(self), QUERY_BLOCK):
                    stop = min(start + QUERY_BLOCK, len(self))
                    users = network.user_vectors({c: v[start:stop] for c, v in self.inputs.items()})
                    scores = users @ items.T
                    scores[:, 0] = -math.inf  # the unknown/padding index is no item
                    for row in range(stop - start):
                        scores[row, torch.from_numpy(self.seen[start + row])] = -math.inf
                    top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.numpy()
                    for row in range(stop - start):
                        total += query_metric(top[row], self.labels[start + row], self.label_counts[start + row], metric, k)
        finally:
            network.train(was_training)
        return total / len(self)


def query_metric(predicted: np.ndarray, labels: np.ndarray, label_count: int, metric: str, k: int) -> float:
    """Recall or NDCG of one ranked list (``evaluation.per_query_metrics``' definitions); label 0 never hits."""
    hit_positions = np.flatnonzero(np.isin(predicted, labels[labels > 0]))
    if metric == "recall":
        return len(hit_positions) / label_count
    dcg = float(np.sum(1.0 / np.log2(hit_positions + 2.0)))
    ideal = float(np.sum(1.0 / np.log2(np.arange(1, min(label_count, k) + 1) + 1.0)))
    return dcg / ideal
