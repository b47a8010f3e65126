"""Spark jobs that turn train interactions into two-tower training data.

Positives are the train events rated above the threshold, each with the user's context at that event
(``last_item``, ``recent_items`` over the full ordered train sequence), the user's side features and
the item; for the sampled-negative losses each also carries ``num_negatives`` sampled items. Every
feature is encoded to embedding indices with vocabularies built here, then the examples are written as
parquet for the training processes, together with the (small) item table they look item features up in.

The files' column names are the contract between this writer and the training processes that read them:
examples hold every user-tower input (encoded, see ``schema.encoded_column``), the positive item's index
(``POSITIVE_ITEM``) and, for the sampled-negative losses, the negatives' indices (``NEGATIVE_ITEMS``, the
column ``data/sampling.py`` writes); the item table holds every item-tower input per item index plus
``LOG_Q``, the log of the item's share of the positives, and, when the training loop draws negatives itself
(shared by a batch), ``SAMPLING_WEIGHT``: the item's train count ** alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ...columns import ITEM_ID, LAST_ITEM, RATING, RECENT_ITEMS, TIMESTAMP, USER_ID
from ...data.context import DEFAULT_HISTORY, EVENT_INDEX, with_sequence_context
from ...data.sampling import COUNT, NEGATIVE_ITEMS, sample_negative_items
from ...errors import EmptyDataError
from .schema import (
    CONTEXT,
    INTERACTIONS,
    ITEM_FEATURES,
    SEQUENCE,
    USER_FEATURES,
    Feature,
    FeatureSchema,
    encoded_column,
)
from .shards import list_parquet_files
from .vocabulary import INDEX, UNKNOWN_INDEX, VALUE, ColumnEncoding, build_vocabulary, encode_columns

POSITIVE_ITEM = "item__item_id"  # encoded_column of the item tower's item_id
LOG_Q = "log_q"
SAMPLING_WEIGHT = "sampling_weight"
EXAMPLE_KEY = "_example_key"
_INDEX = "_item_index"
ROWS_PER_FILE = 100_000
FILES_PER_PROCESS = 4


@dataclass
class FeatureTables:
    """What training and retrieval share: vocabularies, the encoded catalog, the raw user side table."""

    schema: FeatureSchema
    vocabularies: dict[str, DataFrame]
    sizes: dict[str, int]
    items: DataFrame
    users: DataFrame | None


def build_feature_tables(
    train: DataFrame,
    schema: FeatureSchema,
    user_features: DataFrame | None,
    item_features: DataFrame | None,
) -> FeatureTables:
    sources = {INTERACTIONS: train, USER_FEATURES: user_features, ITEM_FEATURES: item_features}
    vocabularies, sizes = {}, {}
    for name, vocabulary in schema.used_vocabularies().items():
        vocabularies[name], sizes[name] = build_vocabulary(sources[vocabulary.table].select(vocabulary.column))
    items = encoded_catalog(schema, vocabularies, item_features)
    users = raw_user_table(schema, user_features)
    return FeatureTables(schema, vocabularies, sizes, items, users)


def feature_encoding(feature: Feature) -> ColumnEncoding:
    return ColumnEncoding(
        source=feature.name,
        target=encoded_column(feature),
        vocabulary=feature.vocabulary,
        width=feature.max_length if feature.is_list else None,
        keep_last=feature.kind == SEQUENCE,
    )


def encoded_catalog(schema: FeatureSchema, vocabularies: dict[str, DataFrame], item_features: DataFrame | None) -> DataFrame:
    """``item_id`` plus every item-tower feature encoded, one row per item of the item_id vocabulary."""
    item_id = next(f for f in schema.item if f.name == ITEM_ID)
    catalog = vocabularies[item_id.vocabulary].select(F.col(VALUE).alias(ITEM_ID))
    side = [f.name for f in schema.item if f.source == ITEM_FEATURES]
    if side:
        catalog = catalog.join(item_features.select(ITEM_ID, *side).dropDuplicates([ITEM_ID]), ITEM_ID, "left")
    encodings = [feature_encoding(f) for f in schema.item]
    return encode_columns(catalog, encodings, vocabularies, keep=[ITEM_ID])


def raw_user_table(schema: FeatureSchema, user_features: DataFrame | None) -> DataFrame | None:
    side = [f.name for f in schema.user if f.source == USER_FEATURES]
    if not side:
        return None
    return user_features.select(USER_ID, *side).dropDuplicates([USER_ID])


def encode_user_inputs(
    frame: DataFrame,
    tables: FeatureTables,
    keep: list[str],
    extra: tuple[ColumnEncoding, ...] = (),
    encoded: tuple[str, ...] = (),
) -> DataFrame:
    """``keep`` plus every user-tower feature encoded; ``frame`` holds the context columns the schema reads.

    ``encoded``: target columns ``frame`` already holds encoded (taken as they are, in the same column order).
    """
    if tables.users is not None:
        frame = frame.join(tables.users, USER_ID, "left")
    encodings = [feature_encoding(f) for f in tables.schema.user] + list(extra)
    to_encode = [e for e in encodings if e.target not in encoded]
    result = encode_columns(frame, to_encode, tables.vocabularies, keep=keep + list(encoded))
    return result.select(*keep, *[e.target for e in encodings])


def history_length(schema: FeatureSchema) -> int:
    lengths = [f.max_length for f in schema.user if f.source == CONTEXT and f.name == RECENT_ITEMS]
    return lengths[0] if lengths else DEFAULT_HISTORY


def positive_events(train: DataFrame, positive_threshold: float, history: int) -> DataFrame:
    """Train events rated above the threshold (all events when there is no rating), with their context."""
    columns = [USER_ID, ITEM_ID, TIMESTAMP] + ([RATING] if RATING in train.columns else [])
    events = with_sequence_context(train.select(*columns), history=history)
    if RATING in columns:
        events = events.where(F.col(RATING) > positive_threshold)
    return events.select(USER_ID, ITEM_ID, LAST_ITEM, RECENT_ITEMS, EVENT_INDEX)


def training_examples(
    train: DataFrame,
    tables: FeatureTables,
    positive_threshold: float,
    num_negatives: int | None,
    alpha: float,
    seed: int,
) -> tuple[DataFrame, DataFrame]:
    """Encoded examples (key, user inputs, positive item, optionally negatives) and the encoded positives.

    The positives are cached: callers count them and derive item frequencies from them.
    """
    item_id = next(f for f in tables.schema.item if f.name == ITEM_ID)
    history = history_length(tables.schema)
    # Item ids → indices on the events, before the context is built: the positive item, last_item and
    # recent_items then come out encoded, with no list to explode and join per event.
    indices = tables.vocabularies[item_id.vocabulary].select(F.col(VALUE).alias(ITEM_ID), F.col(INDEX).alias(_INDEX))
    indexed = train.join(indices, ITEM_ID).withColumn(ITEM_ID, F.col(_INDEX)).drop(_INDEX)
    positives = positive_events(indexed, positive_threshold, history)
    positives = positives.withColumn(EXAMPLE_KEY, F.xxhash64(USER_ID, EVENT_INDEX))
    context = {}
    for feature in tables.schema.user:
        if feature.source != CONTEXT or feature.vocabulary != item_id.vocabulary:
            continue
        if feature.name == LAST_ITEM and not feature.is_list:
            context[encoded_column(feature)] = F.coalesce(F.col(LAST_ITEM), F.lit(UNKNOWN_INDEX)).cast("int")
        elif feature.name == RECENT_ITEMS and feature.is_list and feature.max_length == history:
            recent = F.col(RECENT_ITEMS).cast("array<int>")  # at most `history` entries, most recent last
            context[encoded_column(feature)] = F.concat(recent, F.array_repeat(F.lit(UNKNOWN_INDEX), history - F.size(recent)))
    context[encoded_column(item_id)] = F.col(ITEM_ID).cast("int")  # POSITIVE_ITEM
    positives = positives.select("*", *[column.alias(name) for name, column in context.items()])
    encoded = encode_user_inputs(
        positives, tables, keep=[EXAMPLE_KEY, USER_ID], extra=(feature_encoding(item_id),), encoded=tuple(context)
    )
    encoded = encoded.persist(StorageLevel.MEMORY_AND_DISK)
    count = encoded.count()
    if count == 0:
        raise EmptyDataError(f"train holds no positive event (rating > {positive_threshold}): nothing to fit")
    if num_negatives is None:
        return encoded, encoded
    counts = item_index_counts(train, tables.vocabularies[item_id.vocabulary])
    sampled = sample_negative_items(
        encoded.withColumnRenamed(POSITIVE_ITEM, ITEM_ID), num_negatives, alpha, seed, counts,
        output_col=NEGATIVE_ITEMS, row_key=EXAMPLE_KEY,
    ).withColumnRenamed(ITEM_ID, POSITIVE_ITEM)
    # A user who owns every sampleable item gets no negatives: such an example cannot be scored.
    complete = sampled.where(F.size(NEGATIVE_ITEMS) == num_negatives)
    return complete.withColumn(NEGATIVE_ITEMS, F.col(NEGATIVE_ITEMS).cast("array<int>")), encoded


def item_index_counts(train: DataFrame, item_vocabulary: DataFrame) -> DataFrame:
    """Train events per item, keyed by item index: the negative-sampling weights."""
    counts = train.groupBy(ITEM_ID).agg(F.count(F.lit(1)).alias(COUNT))
    return item_vocabulary.join(counts, item_vocabulary[VALUE] == counts[ITEM_ID]).select(
        F.col(INDEX).cast("long").alias(ITEM_ID), COUNT
    )


def number_of_files(positives: int, num_proc: int) -> int:
    return max(FILES_PER_PROCESS * num_proc, math.ceil(positives / ROWS_PER_FILE))


def write_training_files(
    examples: DataFrame,
    positives: DataFrame,
    items: DataFrame,
    schema: FeatureSchema,
    directory: str,
    num_files: int,
    sampling_counts: DataFrame | None = None,
    alpha: float = 0.75,
) -> tuple[list[tuple[str, int]], str]:
    """Examples → ``directory/examples`` (deterministic files and row order), items → ``directory/items``.

    ``sampling_counts`` (``item_index_counts``): adds each item's ``SAMPLING_WEIGHT``, count ** alpha (0: never drawn).
    """
    examples_dir, items_dir = f"{directory}/examples", f"{directory}/items"
    data_columns = [c for c in examples.columns if c not in (EXAMPLE_KEY, USER_ID)]
    (
        examples.repartition(num_files, EXAMPLE_KEY)
        .sortWithinPartitions(EXAMPLE_KEY)
        .select(*data_columns)
        .write.mode("overwrite")
        .parquet(examples_dir)
    )
    counts = positives.groupBy(POSITIVE_ITEM).agg(F.count(F.lit(1)).alias(COUNT))
    total = counts.agg(F.sum(COUNT).alias("_total"))
    log_q = counts.crossJoin(total).select(POSITIVE_ITEM, F.log(F.col(COUNT) / F.col("_total")).alias(LOG_Q))
    item_columns = [encoded_column(f) for f in schema.item]
    table = (
        items.select(*item_columns)
        .join(log_q, POSITIVE_ITEM, "left")
        .select(*item_columns, F.coalesce(LOG_Q, F.lit(0.0)).cast("float").alias(LOG_Q))
    )
    if sampling_counts is not None:
        weights = sampling_counts.select(
            F.col(ITEM_ID).cast("int").alias(POSITIVE_ITEM), F.pow(F.col(COUNT).cast("double"), F.lit(float(alpha))).alias(SAMPLING_WEIGHT)
        )
        table = table.join(weights, POSITIVE_ITEM, "left").withColumn(SAMPLING_WEIGHT, F.coalesce(SAMPLING_WEIGHT, F.lit(0.0)))
    (
        table.coalesce(1)
        .write.mode("overwrite")
        .parquet(items_dir)
    )
    return list_parquet_files(examples_dir), items_dir

