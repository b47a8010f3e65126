"""Benchmark rows of the two-tower models: ``factory(seed) -> estimator`` for ``benchmark.MODEL_FACTORIES``.

Each row is a family's defaults (the best found on ml-100k) with the loss and negatives set. The
side tables are optional keyword arguments, so a benchmark that has them can pass them through.
The backend is Horovod when it is installed and TorchDistributor otherwise, so every row runs anywhere.
"""

from __future__ import annotations

from pyspark.sql import DataFrame

from ...distributed.horovod import require_horovod
from ...errors import MissingDependencyError
from .dssm import DSSM
from .simplex import SimpleX


def available_backend() -> str:
    try:
        require_horovod()
    except MissingDependencyError:
        return "torch_distributor"
    return "horovod"


def dssm_bce_neg10(seed: int, item_features: DataFrame | None = None, user_features: DataFrame | None = None) -> DSSM:
    return DSSM(loss="bce", num_negatives=10, seed=seed, backend=available_backend(),
                item_features=item_features, user_features=user_features, verbose=False)


def dssm_bce_neg100(seed: int, item_features: DataFrame | None = None, user_features: DataFrame | None = None) -> DSSM:
    # Ten times the negatives learn more slowly per epoch: two more epochs (tuned on ml-100k).
    return DSSM(loss="bce", num_negatives=100, epochs=7, seed=seed, backend=available_backend(),
                item_features=item_features, user_features=user_features, verbose=False)


def dssm_softmax(seed: int, item_features: DataFrame | None = None, user_features: DataFrame | None = None) -> DSSM:
    return DSSM(loss="sampled_softmax", seed=seed, backend=available_backend(),
                item_features=item_features, user_features=user_features, verbose=False)


def simplex_ccl(seed: int, item_features: DataFrame | None = None, user_features: DataFrame | None = None) -> SimpleX:
    return SimpleX(seed=seed, backend=available_backend(),
                   item_features=item_features, user_features=user_features, verbose=False)


BENCHMARK_FACTORIES = {
    "dssm_bce_neg10": dssm_bce_neg10,
    "dssm_bce_neg100": dssm_bce_neg100,
    "dssm_softmax": dssm_softmax,
    "simplex_ccl": simplex_ccl,
}
