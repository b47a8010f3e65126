import numpy as np
import pytest

from spark_retrieval.errors import InvalidParameterError, MalformedDataError
from spark_retrieval.models.als import ALS, SEED_PRESET

NUM_USERS = 60
NUM_ITEMS = 40
K = 10
SMALL = {"rank": 6, "max_iter": 4, "num_blocks": 2}


@pytest.fixture(scope="module")
def train(spark):
    """Two taste groups: users mostly pick items of their own half of the catalog; explicit ratings 1-5."""
    rng = np.random.default_rng(5)
    rows = []
    for user in range(1, NUM_USERS + 1):
        group = user % 2
        own = np.arange(group * NUM_ITEMS // 2, (group + 1) * NUM_ITEMS // 2) + 100
        items = set(rng.choice(own, size=8, replace=False)) | set(rng.choice(np.arange(100, 100 + NUM_ITEMS), size=2))
        rows += [(user, int(item), float(rng.integers(1, 6)), int(ts)) for ts, item in enumerate(items)]
    rows.append((1, rows[0][1], 5.0, 99))  # a repeated (user, item) pair: still one implicit positive
    return spark.createDataFrame(rows, "user_id long, item_id long, rating double, timestamp long").cache()


@pytest.fixture(scope="module")
def queries(spark):
    rows = [(user * 10, user) for user in range(1, NUM_USERS + 1)] + [(7, 999_999)]
    return spark.createDataFrame(rows, "query_id long, user_id long")


@pytest.fixture(scope="module")
def model(train):
    return ALS(**SMALL).fit(train)


def lists(recommendations):
    return {r["query_id"]: [(e["item_id"], e["score"]) for e in r["recommendations"]] for r in recommendations.collect()}


def train_items(train):
    return {r["user_id"]: set(r["items"]) for r in train.groupBy("user_id").agg({"item_id": "collect_set"}).toDF("user_id", "items").collect()}


def factor_matrix(table, id_column):
    rows = sorted((r[id_column], r["vector"]) for r in table.collect())
    return np.array([i for i, _ in rows]), np.array([v for _, v in rows], dtype=np.float64)


def test_exclude_seen_never_returns_a_train_item(model, train, queries):
    seen = train_items(train)
    result = lists(model.recommend(queries, K))
    for user in range(1, NUM_USERS + 1):
        got = [item for item, _ in result[user * 10]]
        assert len(got) == K and not set(got) & seen[user]


def test_without_exclusion_matches_brute_force_over_factor_tables(model, queries):
    keep_seen = model.copy({model.exclude_seen: False})
    result = lists(keep_seen.recommend(queries, K))
    user_ids, users = factor_matrix(model.user_embeddings(), "user_id")
    item_ids, items = factor_matrix(model.item_embeddings(), "item_id")
    for user_id, vector in zip(user_ids, users):
        scores = items @ vector
        best = np.lexsort((item_ids, -scores))[:K]
        got = result[user_id * 10]
        assert [item for item, _ in got] == item_ids[best].tolist()
        np.testing.assert_allclose([s for _, s in got], scores[best], rtol=1e-9)


def test_unknown_user_gets_an_empty_list(model, queries):
    assert lists(model.recommend(queries, K))[7] == []


def test_tables_and_embeddings(model, train):
    assert model.user_embeddings().columns == ["user_id", "vector"]
    assert model.item_embeddings().columns == ["item_id", "vector"]
    assert model.user_embeddings().count() == NUM_USERS
    assert model.item_embeddings().count() == train.select("item_id").distinct().count()
    assert len(model.item_embeddings().first()["vector"]) == SMALL["rank"]
    assert sorted(model.tables) == ["item_factors", "seen", "user_factors"]
    assert model.get("rank") == SMALL["rank"] and model.get("alpha") == ALS().get("alpha")


def test_seed_preset_has_the_documented_values():
    preset = ALS.seed_preset().params_dict()
    assert {name: preset[name] for name in SEED_PRESET} == {
        "rank": 256,
        "max_iter": 100,
        "reg_param": 0.05,
        "nonnegative": True,
        "implicit_prefs": False,
        "exclude_seen": False,
    }
    assert ALS.seed_preset(max_iter=3).get("max_iter") == 3


def test_seed_preset_trains_on_ratings_and_keeps_seen_items(train, queries):
    preset = ALS.seed_preset(rank=4, max_iter=3, num_blocks=2).fit(train)
    assert preset.get("exclude_seen") is False and preset.get("implicit_prefs") is False
    factors = np.array([r["vector"] for r in preset.item_embeddings().collect()])
    assert (factors >= 0).all()
    assert len(lists(preset.recommend(queries, K))[10]) == K
    with pytest.raises(MalformedDataError):
        ALS.seed_preset(rank=4, max_iter=1).fit(train.drop("rating"))


@pytest.mark.parametrize(
    "bad",
    [
        {"rank": 0},
        {"max_iter": 0},
        {"reg_param": -0.1},
        {"alpha": -1.0},
        {"rank": "big"},
        {"num_blocks": 0},
        {"checkpoint_interval": 0},
        {"exclude_seen": "yes"},
    ],
)
def test_bad_params_are_rejected_at_construction(bad):
    with pytest.raises(InvalidParameterError):
        ALS(**bad)


def test_bad_k_is_rejected(model, queries):
    with pytest.raises(InvalidParameterError):
        model.recommend(queries, 0)


def test_als_runs_on_native_openblas_where_setup_installed_it(spark, model):
    """MLlib loads the system BLAS/LAPACK (netlib's JNI wrappers) instead of its Java fallback. Setup installs
    OpenBLAS (scripts/install_system_packages.sh); a machine set up without root may lack it, except CI."""
    import os
    from pathlib import Path

    installed = any(Path(d, "libopenblas.so.0").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"))
    if not installed and not os.environ.get("CI"):
        pytest.skip("OpenBLAS is not installed here (scripts/install_system_packages.sh installs it as root)")
    from spark_retrieval.session import blas_in_use

    blas = blas_in_use(spark)  # what ALS calls, and the libraries the JVM has mapped
    assert blas.startswith("JNIBLAS (") and "libopenblas" in blas, blas
    assert spark._jvm.dev.ludovic.netlib.lapack.LAPACK.getInstance().getClass().getName() == "dev.ludovic.netlib.lapack.JNILAPACK"
