"""Retrieval models: each an Estimator whose ``fit(train)`` returns a Model with ``recommend(queries, k)``."""

from .base import ItemToItemModel, RetrievalEstimator, RetrievalModel
from .global_hot import GlobalHot, GlobalHotModel

__all__ = [
    "GlobalHot",
    "GlobalHotModel",
    "ItemToItemModel",
    "RetrievalEstimator",
    "RetrievalModel",
]
