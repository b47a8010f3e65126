"""Vocabularies, encoding and the per-rank example shards of the two-tower training data."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_retrieval.models.two_tower.shards import list_parquet_files, rank_share, shuffled_batches, steps_per_epoch
from spark_retrieval.models.two_tower.vocabulary import build_vocabulary, encode_array


def test_vocabulary_is_contiguous_from_one_in_value_order(spark):
    values = spark.createDataFrame([(["b", "a"],), (["c", None],), (["a"],), (None,)], "genres array<string>")
    table, ordered = build_vocabulary(values)
    assert ordered == ["a", "b", "c"]
    assert sorted((r["value"], r["index"]) for r in table.collect()) == [("a", 1), ("b", 2), ("c", 3)]


def test_encoding_maps_unknown_and_null_to_zero_and_pads_lists():
    value_set = pa.array([10, 20, 30], type=pa.int64())
    assert encode_array(pa.array([20, 99, None, 10], type=pa.int64()), value_set, None, False).to_pylist() == [2, 0, 0, 1]
    lists = pa.array([[10, 20, 30, 20], [], None, [99]], type=pa.list_(pa.int64()))
    assert encode_array(lists, value_set, 3, keep_last=True).to_pylist() == [[2, 3, 2], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert encode_array(lists, value_set, 3, keep_last=False).to_pylist() == [[1, 2, 3], [0, 0, 0], [0, 0, 0], [0, 0, 0]]


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
