"""Retrieval models: each an Estimator whose ``fit(train)`` returns a Model with ``recommend(queries, k)``."""

from .als import ALS, ALSModel
from .base import RetrievalEstimator, RetrievalModel
from .global_hot import GlobalHot, GlobalHotModel
from .item_cf import ItemCF, ItemCFModel
from .item_to_item import ItemToItemModel
from .registry import MODELS, build_estimator, resolve_models
from .swing import Swing, SwingModel

__all__ = [
    "ALS",
    "ALSModel",
    "GlobalHot",
    "GlobalHotModel",
    "ItemCF",
    "ItemCFModel",
    "ItemToItemModel",
    "MODELS",
    "RetrievalEstimator",
    "RetrievalModel",
    "Swing",
    "SwingModel",
    "build_estimator",
    "resolve_models",
]

_TWO_TOWER = {"DSSM", "DSSMModel", "SimpleX", "SimpleXModel", "TwoTowerModel"}


def __getattr__(name: str):
    # Two-tower models need torch, an optional extra: imported on first use only.
    if name in _TWO_TOWER:
        from . import two_tower

        return getattr(two_tower, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
