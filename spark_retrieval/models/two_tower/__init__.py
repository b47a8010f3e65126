"""Two-tower retrieval models (DSSM, SimpleX): Spark-built training data, distributed torch training,
distributed embedding and exact top-K retrieval.

Modules, from the bottom up: ``schema`` (feature schemas), ``vocabulary`` (id vocabularies and the
encoder), ``shards`` (each process's share of the example files), ``training_data`` (the Spark jobs that
write those files), ``network`` (the networks' interface, building blocks and registry), ``losses`` (the
losses and the training objective), ``checkpoint`` (weights as bytes and tables, parameter hashes,
per-epoch checkpoints), ``training`` (the per-process training loop), ``model`` (the fitted model:
embeddings and retrieval), ``estimator`` (the shared Params and fit pipeline), then one module per family,
``dssm`` and ``simplex``. Importing the package imports both families, which registers their networks.
"""

from .dssm import DSSM, DSSMModel
from .model import TwoTowerModel
from .schema import FeatureSchema, load_schema
from .simplex import SimpleX, SimpleXModel

__all__ = ["DSSM", "DSSMModel", "FeatureSchema", "SimpleX", "SimpleXModel", "TwoTowerModel", "load_schema"]
