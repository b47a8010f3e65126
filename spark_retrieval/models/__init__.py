"""Retrieval models: each an Estimator whose ``fit(train)`` returns a Model with ``recommend(queries, k)``."""

from .als import ALS, ALSModel
from .base import ItemToItemModel, RetrievalEstimator, RetrievalModel
from .global_hot import GlobalHot, GlobalHotModel
from .item_cf import ItemCF, ItemCFModel
from .swing import Swing, SwingModel

__all__ = [
    "ALS",
    "ALSModel",
    "GlobalHot",
    "GlobalHotModel",
    "ItemCF",
    "ItemCFModel",
    "ItemToItemModel",
    "RetrievalEstimator",
    "RetrievalModel",
    "Swing",
    "SwingModel",
]
