"""spark-retrieval: train and evaluate retrieval (recall) models for recommender systems on Spark."""

from . import models
from .data import load_movielens, temporal_split
from .evaluation import evaluate
from .session import get_spark

__version__ = "0.1.0"

__all__ = ["evaluate", "get_spark", "load_movielens", "models", "temporal_split", "__version__"]
