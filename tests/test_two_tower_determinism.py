"""Same seed, same number of processes → the same two-tower model, embeddings, recommendations and metrics.

Each model (DSSM, SimpleX) is fitted twice per setting and the two results are compared:

* 1 process (``backend="local"``): byte-identical — same parameter hash, embeddings, lists and scores, metrics.
* 2 processes (Horovod over Gloo): also byte-identical, and asserted so. Why that holds: every random draw is
  seeded (initial weights broadcast from rank 0, example order by ``seed, epoch``, in-window shuffle by
  ``seed, epoch, rank``, dropout by the seeded torch generator), each rank's share and batches are fixed,
  each rank runs its own arithmetic on a fixed thread count, and the one reduction across processes, the
  gradient allreduce, adds exactly two numbers per element: floating-point addition is commutative, so
  ``a + b`` is the same bits whichever rank's value Gloo takes first, and averaging multiplies by 0.5,
  which is exact. With three or more processes the order in which a ring allreduce adds the terms
  depends on how Horovod's tensor fusion happened to cut the buffers, so there the expected difference
  is rounding-level (≈1e-7 relative on weights), not zero; this test pins the 2-process case.
"""

import numpy as np
import pytest

from spark_retrieval.columns import ITEM_ID, QUERY_ID, RECOMMENDATIONS, SCORE
from spark_retrieval.data.split import temporal_split
from spark_retrieval.evaluation import evaluate
from spark_retrieval.models.two_tower import DSSM, SimpleX

from horovod_available import requires_horovod

pytestmark = pytest.mark.slow

SCHEMA = "user_id long, item_id long, rating double, timestamp long"
COMMON = dict(epochs=2, embedding_dim=8, batch_size=32, verbose=False, seed=7)
FAMILIES = {
    "dssm": lambda **kw: DSSM(**COMMON, loss="bce", num_negatives=4, hidden_dims=[16, 8], dropout=0.1, **kw),
    "simplex": lambda **kw: SimpleX(**COMMON, num_negatives=4, dropout=0.1, **kw),
}


@pytest.fixture(scope="module")
def split(spark):
    rng = np.random.default_rng(3)
    rows = [
        (u, int((u + t) % 40 if rng.random() < 0.6 else rng.integers(0, 40)), float(rng.integers(1, 6)), t)
        for u in range(30)
        for t in range(14)
    ]
    result = temporal_split(spark.createDataFrame(rows, SCHEMA))
    return result.train.cache(), result.test.cache()


def snapshot(model, train, test) -> dict:
    """Everything a user reads off a fitted model, as plain Python values (floats compared bit for bit)."""
    recommendations = model.recommend(test, 5)
    items = sorted((r[ITEM_ID], list(r["vector"])) for r in model.item_embeddings().collect())
    users = sorted((r[QUERY_ID], list(r["vector"])) for r in model.user_embeddings(test).collect())
    lists = sorted(
        (r[QUERY_ID], [(e[ITEM_ID], e[SCORE]) for e in r[RECOMMENDATIONS]]) for r in recommendations.collect()
    )
    training = model.metadata["training"]
    return {
        "parameter_hashes": training["parameter_hashes"],
        "losses": [(h["epoch"], h["loss"], h["samples"]) for h in training["history"]],
        "item_vectors": items,
        "user_vectors": users,
        "recommendations": lists,
        "metrics": evaluate(recommendations, test, k=5, catalog=train),
    }


def assert_identical(first: dict, second: dict) -> None:
    for key in first:
        assert first[key] == second[key], f"{key} differ between two runs with the same seed"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_one_process_runs_are_byte_identical(split, family):
    train, test = split
    first = snapshot(FAMILIES[family](backend="local").fit(train), train, test)
    second = snapshot(FAMILIES[family](backend="local").fit(train), train, test)
    assert_identical(first, second)
    assert first["metrics"]["queries"] == test.select(QUERY_ID).distinct().count()


@requires_horovod
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_two_process_horovod_runs_are_byte_identical(split, family):
    train, test = split
    runs = [
        snapshot(FAMILIES[family](backend="horovod", num_proc=2, start_timeout=300).fit(train), train, test)
        for _ in range(2)
    ]
    hashes = runs[0]["parameter_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # the ranks agree with each other within a run
    assert_identical(*runs)
