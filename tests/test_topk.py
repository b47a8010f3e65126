import numpy as np
import pytest

from spark_retrieval.errors import InvalidParameterError, MalformedDataError
from spark_retrieval.retrieval import top_k_inner_product
from spark_retrieval.retrieval.topk import block_top_k, item_block

NUM_QUERIES = 40
NUM_ITEMS = 57
FALLBACK = {"max_broadcast_bytes": 0, "block_bytes": 150}  # ~5 items per block, ~9 query groups


def brute_force(queries, items, item_ids, k, excluded=None, normalize=False):
    """Per query: [(item_id, score)] best first (score desc, item id asc), or [] for a None query."""
    items = items.astype(np.float64)
    if normalize:
        items = _unit_rows(items)
    result = []
    for row, query in enumerate(queries):
        if query is None:
            result.append([])
            continue
        query = np.asarray(query, dtype=np.float64)
        if normalize:
            query = _unit_rows(query[None, :])[0]
        scores = items @ query
        eligible = ~np.isin(item_ids, list(excluded[row] or [])) if excluded is not None else np.ones(len(item_ids), bool)
        order = [i for i in np.lexsort((item_ids, -scores)) if eligible[i]][:k]
        result.append([(int(item_ids[i]), float(scores[i])) for i in order])
    return result


def _unit_rows(matrix):
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.where(norms > 0, matrix / np.where(norms > 0, norms, 1), matrix)


def as_lists(df):
    return {row["query_id"]: [(r["item_id"], r["score"]) for r in row["recommendations"]] for row in df.collect()}


def assert_matches(actual, expected, exact=False):
    assert set(actual) == set(range(len(expected)))
    for query_id, want in enumerate(expected):
        got = actual[query_id]
        assert [i for i, _ in got] == [i for i, _ in want], f"query {query_id}"
        if exact:
            assert [s for _, s in got] == [s for _, s in want]
        else:
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def random_data(spark):
    """Continuous vectors; a few queries without a vector, exclusion lists (some null, some unknown ids)."""
    rng = np.random.default_rng(7)
    items = rng.normal(size=(NUM_ITEMS, 6)).astype(np.float32)
    item_ids = rng.permutation(np.arange(1000, 1000 + 3 * NUM_ITEMS, 3))[:NUM_ITEMS]
    queries = [rng.normal(size=6).astype(np.float32) for _ in range(NUM_QUERIES)]
    queries[3] = queries[17] = None
    excluded = [list(map(int, rng.choice(item_ids, size=rng.integers(0, 12), replace=False))) for _ in range(NUM_QUERIES)]
    excluded[5] = None
    excluded[6] = [1, 2, 3]
    excluded[7] = list(map(int, item_ids))[:-4]  # only 4 eligible items left
    query_df = spark.createDataFrame(
        [(i, None if q is None else q.tolist(), excluded[i]) for i, q in enumerate(queries)],
        "query_id long, vector array<float>, seen array<long>",
    )
    item_df = spark.createDataFrame(
        [(int(i), v.tolist()) for i, v in zip(item_ids, items)], "item_id long, vector array<float>"
    )
    return query_df, item_df, queries, items, item_ids, excluded


@pytest.fixture(scope="module")
def tied_data(spark):
    """Small-integer vectors: exact dot products everywhere and many equal scores around the k-th place."""
    rng = np.random.default_rng(11)
    items = rng.integers(-1, 3, size=(NUM_ITEMS, 3)).astype(np.float64)
    items[10] = items[20] = items[30]  # duplicates tie for every query
    item_ids = np.arange(NUM_ITEMS)[::-1].copy()
    queries = [rng.integers(-1, 3, size=3).astype(np.float64) for _ in range(NUM_QUERIES)]
    excluded = [list(map(int, rng.choice(item_ids, size=3, replace=False))) for _ in range(NUM_QUERIES)]
    query_df = spark.createDataFrame(
        [(i, q.tolist(), excluded[i]) for i, q in enumerate(queries)],
        "query_id int, embedding array<double>, seen array<int>",
    )
    item_df = spark.createDataFrame(
        [(int(i), v.tolist()) for i, v in zip(item_ids, items)], "item_id int, features array<double>"
    )
    return query_df, item_df, queries, items, item_ids, excluded


@pytest.mark.parametrize("path", [{}, FALLBACK], ids=["broadcast", "block-cross-join"])
def test_matches_brute_force_with_exclusions(random_data, path):
    query_df, item_df, queries, items, item_ids, excluded = random_data
    result = top_k_inner_product(query_df, item_df, 10, exclude_column="seen", **path)
    expected = brute_force(queries, items, item_ids, 10, excluded)
    assert_matches(as_lists(result), expected)
    assert len(expected[7]) == 4 and expected[3] == []


@pytest.mark.parametrize("path", [{}, FALLBACK], ids=["broadcast", "block-cross-join"])
def test_ties_break_by_item_id(tied_data, path):
    query_df, item_df, queries, items, item_ids, excluded = tied_data
    result = top_k_inner_product(
        query_df, item_df, 7, query_vector="embedding", item_vector="features", exclude_column="seen", **path
    )
    expected = brute_force(queries, items, item_ids, 7, excluded)
    assert_matches(as_lists(result), expected, exact=True)


def test_paths_and_batch_sizes_give_identical_lists(random_data, tied_data):
    for query_df, item_df, *_ in (random_data, tied_data):
        vectors = {"query_vector": query_df.columns[1], "item_vector": item_df.columns[1]}
        runs = [
            top_k_inner_product(query_df, item_df, 9, exclude_column="seen", **vectors, **options)
            for options in ({}, {"query_batch_size": 3}, FALLBACK, {**FALLBACK, "query_batch_size": 2})
        ]
        lists = [as_lists(run) for run in runs]
        assert all(other == lists[0] for other in lists[1:])


def test_k_larger_than_catalog_returns_every_item(random_data):
    query_df, item_df, queries, items, item_ids, _ = random_data
    result = as_lists(top_k_inner_product(query_df, item_df, 100))
    assert_matches(result, brute_force(queries, items, item_ids, 100))
    assert len(result[0]) == NUM_ITEMS


@pytest.mark.parametrize("path", [{}, FALLBACK], ids=["broadcast", "block-cross-join"])
def test_normalize_ranks_by_cosine(random_data, path):
    query_df, item_df, queries, items, item_ids, _ = random_data
    result = as_lists(top_k_inner_product(query_df, item_df, 5, normalize=True, **path))
    expected = brute_force(queries, items, item_ids, 5, normalize=True)
    for query_id, want in enumerate(expected):
        assert [i for i, _ in result[query_id]] == [i for i, _ in want]
        # Vectors are normalised to float32 before scoring, so cosines agree to float32 precision.
        np.testing.assert_allclose([s for _, s in result[query_id]], [s for _, s in want], rtol=1e-5, atol=1e-6)


def test_any_query_id_type_and_empty_catalog(spark, random_data):
    _, item_df, *_ = random_data
    queries = spark.createDataFrame([("a", [1.0] * 6), ("b", None)], "query_id string, vector array<double>")
    result = {row["query_id"]: row["recommendations"] for row in top_k_inner_product(queries, item_df, 3).collect()}
    assert len(result["a"]) == 3 and result["b"] == []
    empty = {row["query_id"]: row["recommendations"] for row in top_k_inner_product(queries, item_df.limit(0), 3).collect()}
    assert empty == {"a": [], "b": []}


def test_output_schema(random_data):
    query_df, item_df, *_ = random_data
    result = top_k_inner_product(query_df, item_df, 3)
    assert result.schema.simpleString() == (
        "struct<query_id:bigint,recommendations:array<struct<item_id:bigint,score:double>>>"
    )


def test_rejects_bad_arguments_and_inputs(spark, random_data):
    query_df, item_df, *_ = random_data
    with pytest.raises(InvalidParameterError):
        top_k_inner_product(query_df, item_df, 0)
    with pytest.raises(InvalidParameterError):
        top_k_inner_product(query_df, item_df, 3, query_batch_size=0)
    with pytest.raises(MalformedDataError):
        top_k_inner_product(query_df.withColumn("vector", query_df["query_id"]), item_df, 3)
    with pytest.raises(MalformedDataError):
        top_k_inner_product(query_df, item_df.union(item_df), 3)
    ragged = spark.createDataFrame([(1, [1.0]), (2, [1.0, 2.0])], "item_id long, vector array<double>")
    with pytest.raises(MalformedDataError):
        top_k_inner_product(query_df, ragged, 3)


def test_block_top_k_keeps_all_boundary_ties():
    """Ten items with equal scores around the cut: the smallest ids win, whatever argpartition picked."""
    rng = np.random.default_rng(3)
    ids = rng.permutation(100)[:12]
    matrix = np.ones((12, 4), dtype=np.float32)
    matrix[0] = 2.0
    block = item_block(ids, matrix)
    queries = np.ones((2, 4), dtype=np.float32)
    counts, got_ids, scores = block_top_k(queries, np.array([1]), np.array([ids[0]]), block, 4, 8)
    tied = np.sort(ids[1:])
    assert counts.tolist() == [4, 4]
    assert got_ids[:4].tolist() == [ids[0], *tied[:3]] and scores[:4].tolist() == [8.0, 4.0, 4.0, 4.0]
    assert got_ids[4:].tolist() == tied[:4].tolist()
