"""DSSM: two MLP towers over concatenated feature embeddings; score = <u, v> / temperature.

Per tower the features' embeddings (lists mean-pooled) are concatenated and fed to an MLP (ReLU
between layers, the last layer linear); with ``normalize`` the outputs are L2-normalised, so the score
is cosine / temperature. Losses: ``bce`` on sampled negatives, or ``sampled_softmax`` over in-batch
negatives with logQ correction and accidental hits removed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...distributed import DEFAULT_FAILURE_TIMEOUT
from ..base import check, param
from .estimator import TwoTowerEstimator
from .losses import BCE, SAMPLED_SOFTMAX
from .model import TwoTowerModel
from .network import TwoTowerNetwork
from .params import is_int, is_number
from .schema import FeatureSchema, encoded_column
from .towers import FeatureEmbeddings, mlp

LOSSES = (BCE, SAMPLED_SOFTMAX)


class DSSMNetwork(TwoTowerNetwork):
    def __init__(
        self,
        schema: FeatureSchema,
        vocabulary_sizes: dict[str, int],
        hidden_dims: list[int],
        normalize: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__(schema)
        self.cosine = normalize
        self.embeddings = FeatureEmbeddings(schema, vocabulary_sizes)
        self.user_mlp = mlp(sum(f.embedding_dim for f in schema.user), list(hidden_dims), dropout)
        self.item_mlp = mlp(sum(f.embedding_dim for f in schema.item), list(hidden_dims), dropout)

    def _tower(self, tower: str, layers: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        features = self.schema.tower(tower)
        embedded = torch.cat([self.embeddings(f, inputs[encoded_column(f)]) for f in features], dim=-1)
        vectors = layers(embedded)
        return F.normalize(vectors, dim=-1) if self.cosine else vectors

    def user_vectors(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._tower("user", self.user_mlp, inputs)

    def item_vectors(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._tower("item", self.item_mlp, inputs)


class DSSMParams:
    loss = param("loss", "bce (sampled negatives) or sampled_softmax (in-batch negatives, logQ-corrected)")
    hidden_dims = param("hidden_dims", "MLP layer sizes of each tower; the last is the vector size")
    temperature = param("temperature", "score = <u, v> / temperature")
    normalize = param("normalize", "L2-normalise tower outputs (score = cosine / temperature)")
    dropout = param("dropout", "dropout between MLP layers")


class DSSM(TwoTowerEstimator, DSSMParams):
    """DSSM two-tower retrieval model (see the module docstring); ``fit(train)`` → ``DSSMModel``.

    Defaults are the best settings found on ml-100k (holdout 3, positives > 2, Recall@20); see
    ``spark_retrieval/models/two_tower/README.md`` for the search.
    """

    family = "dssm"

    def __init__(
        self,
        *,
        loss: str = SAMPLED_SOFTMAX,
        num_negatives: int = 10,
        alpha: float = 0.75,
        hidden_dims: list[int] = (512, 256, 128),
        temperature: float = 0.05,
        normalize: bool = True,
        dropout: float = 0.0,
        embedding_dim: int | None = None,
        schema: str = "dssm_movielens",
        positive_threshold: float = 2.0,
        epochs: int = 5,
        batch_size: int = 512,
        learning_rate: float = 3e-3,
        weight_decay: float = 0.0,
        seed: int = 0,
        backend: str = "horovod",
        num_proc: int | None = None,
        nics: list[str] | None = None,
        start_timeout: int = 600,
        failure_timeout: int = DEFAULT_FAILURE_TIMEOUT,
        working_dir: str | None = None,
        checkpoint_dir: str | None = None,
        shuffle_buffer: int = 65536,
        exclude_seen: bool = True,
        verbose: bool = True,
        item_features=None,
        user_features=None,
    ):
        super().__init__()
        self._init_two_tower(locals())

    def loss_name(self) -> str:
        return self.get("loss")

    def network_options(self) -> dict[str, Any]:
        return {"hidden_dims": list(self.get("hidden_dims")), "normalize": self.get("normalize"), "dropout": self.get("dropout")}

    def objective_options(self) -> dict[str, float]:
        return {"temperature": float(self.get("temperature"))}

    def check_family_params(self, schema: FeatureSchema) -> None:
        check(self.get("loss") in LOSSES, f"unknown loss {self.get('loss')!r} for DSSM; choose one of {', '.join(LOSSES)}")
        dims = self.get("hidden_dims")
        check(
            isinstance(dims, (list, tuple)) and len(dims) > 0 and all(is_int(d) and d >= 1 for d in dims),
            f"hidden_dims must be a non-empty list of positive integers, got {dims!r}",
        )
        check(is_number(self.get("temperature")) and self.get("temperature") > 0, f"temperature must be > 0, got {self.get('temperature')!r}")
        check(isinstance(self.get("normalize"), bool), f"normalize must be True or False, got {self.get('normalize')!r}")
        check(is_number(self.get("dropout")) and 0 <= self.get("dropout") < 1, f"dropout must be in [0, 1), got {self.get('dropout')!r}")


class DSSMModel(TwoTowerModel, DSSMParams):
    """A fitted DSSM: ``recommend``, ``item_embeddings``, ``user_embeddings``, ``save``/``load``."""


DSSM.model_class = DSSMModel
