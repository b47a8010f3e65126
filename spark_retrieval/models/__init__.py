"""Retrieval models: each an Estimator whose ``fit(train)`` returns a Model with ``recommend(queries, k)``."""

from .base import ItemToItemModel, RetrievalEstimator, RetrievalModel
from .global_hot import GlobalHot, GlobalHotModel
from .item_cf import ItemCF, ItemCFModel
from .swing import Swing, SwingModel

__all__ = [
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
