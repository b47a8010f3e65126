"""Vocabularies, encoding and the per-rank example shards of the two-tower training data."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from spark_retrieval.models.two_tower import DSSM
from spark_retrieval.models.two_tower.shards import list_parquet_files, rank_share, shuffled_batches, steps_per_epoch
from spark_retrieval.models.two_tower.training_data import build_feature_tables, training_examples
from spark_retrieval.models.two_tower.vocabulary import ColumnEncoding, build_vocabulary, encode_columns


def test_vocabulary_is_contiguous_from_one_in_value_order(spark):
    values = spark.createDataFrame([(["b", "a"],), (["c", None],), (["a"],), (None,)], "genres array<string>")
    table, size = build_vocabulary(values)
    assert size == 3
    assert sorted((r["value"], r["index"]) for r in table.collect()) == [("a", 1), ("b", 2), ("c", 3)]


def test_vocabulary_numbers_follow_value_order_across_partitions(spark):
    values = spark.range(0, 500, numPartitions=3).select((F.col("id") * 7 % 500 - 250).alias("v"))
    table, size = build_vocabulary(values.union(values))
    assert size == 500
    assert [(r["value"], r["index"]) for r in table.orderBy("index").collect()] == [(v, v + 251) for v in range(-250, 250)]


def encoded(spark, rows, schema, encodings):
    vocabulary, _ = build_vocabulary(spark.createDataFrame([(10,), (20,), (30,)], "v long"))
    frame = spark.createDataFrame(rows, schema)
    result = encode_columns(frame, encodings, {"v": vocabulary}, keep=["row"])
    return sorted(tuple(r) for r in result.collect())


def test_encoding_maps_unknown_and_null_to_zero(spark):
    rows = [(0, 20), (1, 99), (2, None), (3, 10), (3, 10)]  # the duplicate row stays twice
    result = encoded(spark, rows, "row int, x long", [ColumnEncoding("x", "x_encoded", "v")])
    assert result == [(0, 2), (1, 0), (2, 0), (3, 1), (3, 1)]


def test_encoding_truncates_and_pads_lists(spark):
    rows = [(0, [10, 20, 30, 20]), (1, []), (2, None), (3, [99]), (4, [30, None, 10]), (5, [30]), (5, [30]), (6, [10, 20, 30, 20])]
    encodings = [
        ColumnEncoding("x", "last", "v", width=3, keep_last=True),
        ColumnEncoding("x", "first", "v", width=3, keep_last=False),
    ]
    assert encoded(spark, rows, "row int, x array<long>", encodings) == [
        (0, [2, 3, 2], [1, 2, 3]),
        (1, [0, 0, 0], [0, 0, 0]),
        (2, [0, 0, 0], [0, 0, 0]),
        (3, [0, 0, 0], [0, 0, 0]),
        (4, [3, 0, 1], [3, 0, 1]),
        (5, [3, 0, 0], [3, 0, 0]),
        (5, [3, 0, 0], [3, 0, 0]),
        (6, [2, 3, 2], [1, 2, 3]),
    ]


def test_feature_tables_and_examples_collect_no_vocabulary(spark, monkeypatch):
    """Vocabularies are built and applied by Spark: the only rows collected are one count per partition."""
    rows = [(u, (u + t) % 7, 4.0, t) for u in range(6) for t in range(5)]
    train = spark.createDataFrame(rows, "user_id long, item_id long, rating double, timestamp long")
    items = spark.createDataFrame([(i, [f"g{i % 3}"] * (i % 4)) for i in range(7)], "item_id long, genres array<string>")
    users = spark.createDataFrame(
        [(u, "MF"[u % 2], 20 + u % 3, f"job{u % 2}") for u in range(6)], "user_id long, gender string, age int, occupation string"
    )
    schema = DSSM(schema="dssm_movielens", item_features=items, user_features=users).resolved_schema(train)
    collected = []
    frame_class, session_class = type(train), type(spark)  # the classic classes, which define these methods
    original_collect = frame_class.collect

    def counts_only(frame):
        collected.append(sorted(frame.columns))
        assert frame.columns == ["_partition", "n"], f"collected {frame.columns} to the driver"
        return original_collect(frame)

    def no_local_data(*args, **kwargs):
        raise AssertionError("a DataFrame was built from driver-side data")

    monkeypatch.setattr(frame_class, "collect", counts_only)
    monkeypatch.setattr(session_class, "createDataFrame", no_local_data)
    tables = build_feature_tables(train, schema, users, items)
    examples, _ = training_examples(train, tables, 0.0, None, 0.75, 0)
    monkeypatch.undo()
    assert collected and tables.sizes == {"user": 6, "item": 7, "genre": 3, "gender": 2, "age": 3, "occupation": 2}
    assert examples.count() == len(rows)


def test_examples_built_on_item_indices_equal_the_raw_context_encoded(spark):
    """The examples' item, last_item and recent_items, computed on item indices, are the raw context encoded."""
    from spark_retrieval.models.two_tower.training_data import EXAMPLE_KEY, encode_user_inputs, positive_events

    # Ratings 1-5 (some events are not positives but stay in the context), ties in time, ids not dense.
    rows = [(u, 100 + 3 * ((u * 5 + t * 7) % 13), float(1 + (u + t) % 5), t // 2) for u in range(8) for t in range(14)]
    train = spark.createDataFrame(rows, "user_id long, item_id long, rating double, timestamp long")
    schema = DSSM(schema="dssm_movielens").resolved_schema(train)
    tables = build_feature_tables(train, schema, None, None)
    examples, _ = training_examples(train, tables, 2.0, None, 0.75, 0)
    history = next(f.max_length for f in schema.user if f.name == "recent_items")
    raw = positive_events(train, 2.0, history).withColumn(EXAMPLE_KEY, F.xxhash64("user_id", "event_index"))
    item_id = next(f for f in schema.item if f.name == "item_id")
    from spark_retrieval.models.two_tower.training_data import feature_encoding

    expected = encode_user_inputs(raw, tables, keep=[EXAMPLE_KEY, "user_id"], extra=(feature_encoding(item_id),))
    assert examples.dtypes == expected.dtypes
    assert sorted(map(tuple, examples.collect())) == sorted(map(tuple, expected.collect()))
    assert examples.where(F.exists("user__recent_items", lambda index: index > 0)).count() > 0


@pytest.fixture
def example_files(tmp_path):
    # 3 files of 10, 7 and 4 rows; row ids 0..20 so coverage can be checked.
    start = 0
    for part, rows in enumerate((10, 7, 4)):
        ids = np.arange(start, start + rows, dtype=np.int32)
        pq.write_table(pa.table({"row": ids}), str(tmp_path / f"part-{part:05d}.parquet"), row_group_size=3)
        start += rows
    return list_parquet_files(str(tmp_path))


def test_every_row_belongs_to_exactly_one_rank_in_equal_shares(example_files):
    assert [rows for _, rows in example_files] == [10, 7, 4]
    for epoch in (0, 1):
        seen, sizes = [], []
        for rank in range(3):
            share = rank_share(example_files, rank, 3, seed=5, epoch=epoch)
            batches = list(shuffled_batches(share, ["row"], 4, 99, 8, np.random.default_rng(0)))
            rows = np.concatenate([b["row"] for b in batches]).tolist()
            seen += rows
            sizes.append(len(rows))
        assert sorted(seen) == list(range(21)) and sizes == [7, 7, 7]


def test_example_files_listed_at_a_file_uri_with_a_space(tmp_path):
    folder = tmp_path / "a folder"
    folder.mkdir()
    pq.write_table(pa.table({"row": np.arange(4, dtype=np.int32)}), str(folder / "part-00000.parquet"))
    (folder / "_SUCCESS").write_bytes(b"")
    listed = list_parquet_files(folder.as_uri())  # file:///…/a%20folder, as Spark spells a local working_dir
    assert listed == [(str(folder / "part-00000.parquet"), 4)]
    assert list_parquet_files(str(folder)) == listed


def test_ranks_run_the_same_number_of_steps(example_files):
    steps = steps_per_epoch(example_files, 2, 4)  # shares of 10 and 11 rows → 3 batches each
    assert steps == 3
    for rank in range(2):
        share = rank_share(example_files, rank, 2, seed=0, epoch=0)
        batches = list(shuffled_batches(share, ["row"], 4, steps, 8, np.random.default_rng(rank)))
        assert len(batches) == steps and all(len(b["row"]) <= 4 for b in batches)


def test_epochs_reshuffle(example_files):
    def order(epoch):
        share = rank_share(example_files, 0, 1, seed=1, epoch=epoch)
        return np.concatenate([b["row"] for b in shuffled_batches(share, ["row"], 4, 99, 8, np.random.default_rng(epoch))]).tolist()

    assert order(0) == order(0) and order(0) != order(1) and sorted(order(1)) == list(range(21))
