"""SimpleX (Mao et al., CIKM 2021): a simple, strong baseline trained with the cosine contrastive loss.

user vector = g · e_user + (1 − g) · V · mean(e_history), item vector = e_item, both L2-normalised, so
the score is their cosine. ``e_user`` sums the user tower's ``part: user`` embeddings (user id and side
features), ``e_history`` the ``part: history`` ones (recent items, last item), which share the item
tower's item embeddings; ``e_item`` sums the item tower's embeddings. Trained with CCL:
(1 − ŷ⁺) + w / N · Σ max(0, ŷ⁻ − margin) over N sampled negatives.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...search import Domain, FloatRange
from ...validation import check, number
from ..base import param
from .estimator import TwoTowerEstimator, TwoTowerParams
from .losses import CCL
from .model import TwoTowerModel
from .network import FeatureEmbeddings, TwoTowerNetwork, register_network
from .schema import FeatureSchema, encoded_column


@register_network("simplex")
class SimpleXNetwork(TwoTowerNetwork):
    cosine = True

    def __init__(self, schema: FeatureSchema, vocabulary_sizes: dict[str, int], gate: float = 0.5, dropout: float = 0.0):
        super().__init__(schema)
        (dim,) = {f.embedding_dim for f in schema.features}
        self.gate = gate
        self.embeddings = FeatureEmbeddings(schema, vocabulary_sizes)
        self.history_transform = nn.Linear(dim, dim, bias=False)  # V
        nn.init.eye_(self.history_transform.weight)
        self.dropout = nn.Dropout(dropout)
        self.user_part = [f for f in schema.user if f.part != "history"]
        self.history_part = [f for f in schema.user if f.part == "history"]

    def _summed(self, features, inputs) -> torch.Tensor:
        return torch.stack([self.embeddings(f, inputs[encoded_column(f)]) for f in features]).sum(dim=0)

    def _aggregated_history(self, inputs) -> torch.Tensor:
        return self.history_transform(self._summed(self.history_part, inputs) / len(self.history_part))

    def user_vectors(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.history_part:
            vector = self._summed(self.user_part, inputs)
        elif not self.user_part:
            vector = self._aggregated_history(inputs)
        else:
            vector = self.gate * self._summed(self.user_part, inputs) + (1.0 - self.gate) * self._aggregated_history(inputs)
        return F.normalize(self.dropout(vector), dim=-1)

    def item_vectors(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(self._summed(self.schema.item, inputs), dim=-1)


class SimpleXParams(TwoTowerParams):
    """SimpleX's parameters and defaults (the shared ones included), for ``SimpleX`` and ``SimpleXModel``.

    The defaults are the benchmark row's settings, chosen on validation (how: the comment above ``MODELS`` in
    ``spark_retrieval/models/registry.py``).
    """

    gate = param("gate", "g: weight of the user embedding against the aggregated history (0..1)", number(at_least=0, at_most=1))
    margin = param("margin", "CCL margin: negatives with cosine below it cost nothing", number(at_least=-1, at_most=1))
    negative_weight = param("negative_weight", "CCL weight w of the negatives' mean hinge", number(at_least=0))
    dropout = param("dropout", "dropout on the user vector before normalisation", number(at_least=0, below=1))

    SEARCH_SPACE: ClassVar[dict[str, Domain]] = {
        **TwoTowerParams.SEARCH_SPACE,
        "negative_weight": FloatRange(1.0, 100.0, log=True),
        "margin": FloatRange(0.0, 1.0),
        "gate": FloatRange(0.0, 1.0),
        "learning_rate": FloatRange(1e-4, 1e-2, log=True),
        "dropout": FloatRange(0.0, 0.5),
    }
    """What ``spark-retrieval tune`` searches (``spark_retrieval.search``); the defaults lie inside."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._set_defaults(
            schema="simplex_movielens",
            num_negatives=100,
            epochs=7,
            learning_rate=0.0008611446989403645,
            gate=0.13789670785689134,
            margin=0.30362742490119654,
            negative_weight=10.080216673273766,
            dropout=0.2073957902731725,
        )


class SimpleX(TwoTowerEstimator, SimpleXParams):
    """SimpleX retrieval model (see the module docstring); ``fit(train)`` → ``SimpleXModel``.

    ``SimpleX(*, item_features=None, user_features=None, **params)``: see ``TwoTowerEstimator``.
    """

    family = "simplex"

    def loss_name(self) -> str:
        return CCL

    def network_options(self) -> dict[str, Any]:
        return {"gate": float(self.get("gate")), "dropout": float(self.get("dropout"))}

    def objective_options(self) -> dict[str, float]:
        return {"margin": float(self.get("margin")), "negative_weight": float(self.get("negative_weight"))}

    def check_family_params(self, schema: FeatureSchema) -> None:
        sizes = {f.embedding_dim for f in schema.features}
        check(
            len(sizes) == 1,
            f"SimpleX sums embeddings, so every feature needs the same embedding_dim; the schema has {sorted(sizes)}",
        )


class SimpleXModel(TwoTowerModel, SimpleXParams):
    """A fitted SimpleX: ``recommend``, ``item_embeddings``, ``user_embeddings``, ``save``/``load``."""


SimpleX.model_class = SimpleXModel
