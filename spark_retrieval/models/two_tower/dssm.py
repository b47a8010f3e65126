"""DSSM: two MLP towers over concatenated feature embeddings; score = <u, v> / temperature.

Per tower the features' embeddings (lists mean-pooled) are concatenated and fed to an MLP (ReLU
between layers, the last layer linear); with ``normalize`` the outputs are L2-normalised, so the score
is cosine / temperature. Losses: ``bce`` on sampled negatives, or ``sampled_softmax`` over in-batch
negatives with logQ correction and accidental hits removed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...search import Choice, Domain, FloatRange, IntRange
from ...validation import boolean, integer_list, number, one_of
from ..base import param
from .estimator import TwoTowerEstimator, TwoTowerParams
from .losses import BCE, SAMPLED_SOFTMAX
from .model import TwoTowerModel
from .network import FeatureEmbeddings, TwoTowerNetwork, mlp, register_network
from .schema import FeatureSchema, encoded_column

LOSSES = (BCE, SAMPLED_SOFTMAX)


@register_network("dssm")
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


class DSSMParams(TwoTowerParams):
    """DSSM's parameters and defaults (the shared ones included), for ``DSSM`` and ``DSSMModel``.

    The defaults are sampled softmax's benchmark row, chosen on validation like every row's settings (how: the
    comment above ``MODELS`` in ``spark_retrieval/models/registry.py``, where the BCE rows set their own).
    """

    loss = param(
        "loss", "bce (sampled negatives) or sampled_softmax (in-batch negatives, logQ-corrected)", one_of(*LOSSES)
    )
    hidden_dims = param("hidden_dims", "MLP layer sizes of each tower; the last is the vector size", integer_list(at_least=1))
    temperature = param("temperature", "score = <u, v> / temperature", number(above=0))
    normalize = param("normalize", "L2-normalise tower outputs (score = cosine / temperature)", boolean)
    dropout = param("dropout", "dropout between MLP layers", number(at_least=0, below=1))

    SEARCH_SPACE: ClassVar[dict[str, Domain]] = {
        **TwoTowerParams.SEARCH_SPACE,
        "learning_rate": FloatRange(1e-4, 1e-2, log=True),
        "temperature": FloatRange(0.02, 0.5, log=True),
        "hidden_dims": Choice(((512, 256, 128), (256, 128), (256, 256, 128), (1024, 512, 128))),
        "num_negatives": IntRange(5, 200, log=True, when={"loss": BCE}),  # sampled_softmax uses in-batch negatives
    }
    """What ``spark-retrieval tune`` searches (``spark_retrieval.search``); the defaults lie inside."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._set_defaults(
            schema="dssm_movielens",
            loss=SAMPLED_SOFTMAX,
            num_negatives=10,
            epochs=7,
            hidden_dims=[512, 256, 128],
            temperature=0.05,
            normalize=True,
            dropout=0.0,
        )


class DSSM(TwoTowerEstimator, DSSMParams):
    """DSSM two-tower retrieval model (see the module docstring); ``fit(train)`` → ``DSSMModel``.

    ``DSSM(*, item_features=None, user_features=None, **params)``: see ``TwoTowerEstimator``.
    """

    family = "dssm"

    def loss_name(self) -> str:
        return self.get("loss")

    def network_options(self) -> dict[str, Any]:
        return {"hidden_dims": list(self.get("hidden_dims")), "normalize": self.get("normalize"), "dropout": self.get("dropout")}

    def objective_options(self) -> dict[str, float]:
        return {"temperature": float(self.get("temperature"))}


class DSSMModel(TwoTowerModel, DSSMParams):
    """A fitted DSSM: ``recommend``, ``item_embeddings``, ``user_embeddings``, ``save``/``load``."""


DSSM.model_class = DSSMModel
