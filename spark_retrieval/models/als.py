"""ALS matrix factorisation (``pyspark.ml.recommendation.ALS``), retrieved by exact top-K inner product.

By default ALS learns from implicit feedback: every distinct (user, item) train pair is one positive, the
other pairs are unobserved, and a user's train items are never recommended back. ``ALS.seed_preset()``
reproduces MetaSpore's explicit-rating MovieLens configuration instead.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from typing import Any, ClassVar

from pyspark.ml.param import Params
from pyspark.ml.recommendation import ALS as SparkALS
from pyspark.ml.recommendation import ALSModel as SparkALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..columns import ITEM_ID, QUERY_ID, RATING, RECOMMENDATIONS, USER_ID, empty_recommendations, require_columns
from ..data.context import SEEN_ITEMS, seen_items
from ..retrieval.topk import top_k_inner_product
from ..search import Domain, FloatRange, IntRange
from ..validation import boolean, check, integer, number, text
from .base import RetrievalEstimator, RetrievalModel, param

USER_FACTORS = "user_factors"
ITEM_FACTORS = "item_factors"
SEEN = "seen"
VECTOR = "vector"

SEED_PRESET: dict[str, Any] = {
    "rank": 256,
    "max_iter": 100,
    "reg_param": 0.05,
    "nonnegative": True,
    "implicit_prefs": False,
    "exclude_seen": False,
}
"""The configuration of MetaSpore's MovieLens ALS row: explicit ratings, seen items left in the lists."""


class ALSParams(Params):
    """Params shared by :class:`ALS` and :class:`ALSModel`."""

    rank = param("rank", "number of latent factors", integer(at_least=1))
    max_iter = param("max_iter", "alternating least squares iterations", integer(at_least=1))
    reg_param = param("reg_param", "L2 regularisation", number(at_least=0))
    alpha = param("alpha", "implicit feedback confidence weight of an observed pair", number(at_least=0))
    implicit_prefs = param(
        "implicit_prefs",
        "learn from binarised (user, item) pairs as implicit feedback; false trains on the raw ratings",
        boolean,
    )
    exclude_seen = param("exclude_seen", "never recommend a user's train items", boolean)
    nonnegative = param("nonnegative", "constrain factors to be non-negative", boolean)
    seed = param("seed", "random seed of the factor initialisation", integer())
    num_blocks = param("num_blocks", "user and item blocks; None keeps Spark's default", integer(at_least=1))
    checkpoint_interval = param(
        "checkpoint_interval", "checkpoint every this many iterations (>= 1, or -1 never)", integer(at_least=-1)
    )
    checkpoint_dir = param(
        "checkpoint_dir", "Spark checkpoint directory; None keeps the context's, or a temporary one in local mode", text
    )

    SEARCH_SPACE: ClassVar[dict[str, Domain]] = {
        "rank": IntRange(8, 256, log=True),
        "reg_param": FloatRange(1e-3, 1.0, log=True),
        "alpha": FloatRange(1.0, 100.0, log=True, when={"implicit_prefs": True}),  # unused on explicit ratings
        "max_iter": IntRange(5, 30),
    }
    """What ``spark-retrieval tune`` searches (``spark_retrieval.search``); the defaults lie inside."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        # rank, max_iter, reg_param, alpha: chosen on validation (see the comment above MODELS in models/registry.py).
        self._setDefault(
            rank=68,
            max_iter=7,
            reg_param=0.10337421122654408,
            alpha=4.460538487313508,
            implicit_prefs=True,
            exclude_seen=True,
            nonnegative=False,
            seed=0,
            num_blocks=None,
            checkpoint_interval=10,
            checkpoint_dir=None,
        )


class ALS(RetrievalEstimator, ALSParams):
    """Alternating least squares (keyword-only parameters); ``fit(train)`` returns an :class:`ALSModel`.

    ``train`` needs ``user_id, item_id`` (plus ``rating`` when ``implicit_prefs=False``), with ids in the
    32-bit integer range as Spark's ALS requires.
    """

    @classmethod
    def seed_preset(cls, **overrides: Any) -> "ALS":
        """MetaSpore's MovieLens ALS configuration: rank 256, 100 iterations, reg 0.05, non-negative, explicit
        ratings, seen items kept (``exclude_seen=False``). ``overrides`` change any of it."""
        return cls(**{**SEED_PRESET, **overrides})

    def validate_params(self) -> None:
        interval = self.get("checkpoint_interval")
        check(interval >= 1 or interval == -1, f"ALS: checkpoint_interval must be >= 1 or -1, got {interval}")

    def _fit_interactions(self, train: DataFrame) -> "ALSModel":
        implicit = self.get("implicit_prefs")
        if not implicit:
            require_columns(train, (RATING,), "train (explicit ALS)")
        spark = SparkSession.getActiveSession()
        ensure_checkpoint_dir(spark, self.get("checkpoint_dir"))
        spark_model = self._spark_estimator().fit(training_ratings(train, implicit))
        return ALSModel(tables={**factor_tables(spark_model), SEEN: seen_items(train)})

    def _spark_estimator(self) -> SparkALS:
        estimator = SparkALS(
            rank=self.get("rank"),
            maxIter=self.get("max_iter"),
            regParam=self.get("reg_param"),
            alpha=self.get("alpha"),
            implicitPrefs=self.get("implicit_prefs"),
            nonnegative=self.get("nonnegative"),
            seed=self.get("seed"),
            checkpointInterval=self.get("checkpoint_interval"),
            userCol=USER_ID,
            itemCol=ITEM_ID,
            ratingCol=RATING,
        )
        if self.get("num_blocks") is not None:
            estimator.setNumUserBlocks(self.get("num_blocks")).setNumItemBlocks(self.get("num_blocks"))
        return estimator


class ALSModel(RetrievalModel, ALSParams):
    """User and item factors plus each user's train items; recommends by exact top-K dot product."""

    def user_embeddings(self) -> DataFrame:
        """``user_id, vector: array<float>``."""
        return self.tables[USER_FACTORS]

    def item_embeddings(self) -> DataFrame:
        """``item_id, vector: array<float>``."""
        return self.tables[ITEM_FACTORS]

    def seen(self) -> DataFrame:
        """``user_id, items: array<long>``: each user's distinct train items, ascending."""
        return self.tables[SEEN]

    def _recommend(self, queries: DataFrame, k: int) -> DataFrame:
        per_user = self.recommend_for_users(queries.select(USER_ID).distinct(), k)
        return queries.select(QUERY_ID, USER_ID).join(per_user, USER_ID, "left").select(
            QUERY_ID, F.coalesce(F.col(RECOMMENDATIONS), empty_recommendations()).alias(RECOMMENDATIONS)
        )

    def recommend_for_users(self, users: DataFrame, k: int) -> DataFrame:
        """``user_id, recommendations`` for the ``users`` known to the model (others are left out)."""
        user_queries = users.join(self.user_embeddings(), USER_ID).select(F.col(USER_ID).alias(QUERY_ID), VECTOR)
        exclude_column = None
        if self.get("exclude_seen"):
            seen = self.seen().withColumnRenamed(USER_ID, QUERY_ID)
            user_queries = user_queries.join(seen, QUERY_ID, "left")
            exclude_column = SEEN_ITEMS
        top = top_k_inner_product(user_queries, self.item_embeddings(), k, exclude_column=exclude_column)
        return top.withColumnRenamed(QUERY_ID, USER_ID)


def training_ratings(train: DataFrame, implicit: bool) -> DataFrame:
    """Implicit: each distinct (user, item) pair rated 1.0. Explicit: the raw ratings as given."""
    if implicit:
        return train.select(USER_ID, ITEM_ID).distinct().withColumn(RATING, F.lit(1.0))
    return train.select(USER_ID, ITEM_ID, F.col(RATING).cast("double"))


def factor_tables(spark_model: SparkALSModel) -> dict[str, DataFrame]:
    """The fitted Spark model's factors as ``user_factors (user_id, vector)`` and ``item_factors (item_id, vector)``."""
    return {
        USER_FACTORS: spark_model.userFactors.select(F.col("id").cast("long").alias(USER_ID), F.col("features").alias(VECTOR)),
        ITEM_FACTORS: spark_model.itemFactors.select(F.col("id").cast("long").alias(ITEM_ID), F.col("features").alias(VECTOR)),
    }


def ensure_checkpoint_dir(spark: SparkSession, requested: str | None) -> None:
    """Use ``requested``; else keep the context's directory; else, in local mode only, a fresh temporary one.

    Without one, Spark's ALS cannot truncate its lineage and long runs can overflow the stack. On a cluster a
    local temporary directory would be wrong (executors cannot share it), so there the caller must set one.
    """
    context = spark.sparkContext
    if requested:
        context.setCheckpointDir(requested)
    elif context.getCheckpointDir() is None and context.master.startswith("local"):
        directory = tempfile.mkdtemp(prefix="spark-retrieval-checkpoints-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        context.setCheckpointDir(directory)
