"""Two-tower retrieval models (DSSM, SimpleX): Spark-built training data, distributed torch training,
distributed embedding and exact top-K retrieval."""

from .dssm import DSSM, DSSMModel
from .model import TwoTowerModel
from .schema import FeatureSchema, load_schema
from .simplex import SimpleX, SimpleXModel

__all__ = ["DSSM", "DSSMModel", "FeatureSchema", "SimpleX", "SimpleXModel", "TwoTowerModel", "load_schema"]
