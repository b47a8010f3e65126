"""SimpleX (Mao et al., CIKM 2021): a simple, strong baseline trained with the cosine contrastive loss.

user vector = g · e_user + (1 − g) · V · mean(e_history), item vector = e_item, both L2-normalised, so
the score is their cosine. ``e_user`` sums the user tower's ``part: user`` embeddings (user id and side
features), ``e_history`` the ``part: history`` ones (recent items, last item), which share the item
tower's item embeddings; ``e_item`` sums the item tower's embeddings. Trained with CCL:
(1 − ŷ⁺) + w / N · Σ max(0, ŷ⁻ − margin) over N sampled negatives.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...distributed import DEFAULT_FAILURE_TIMEOUT
from ..base import check, param
from .estimator import TwoTowerEstimator
from .losses import CCL
from .model import TwoTowerModel
from .network import TwoTowerNetwork
from .params import is_number
from .schema import FeatureSchema, encoded_column
from .towers import FeatureEmbeddings


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


class SimpleXParams:
    gate = param("gate", "g: weight of the user embedding against the aggregated history (0..1)")
    margin = param("margin", "CCL margin: negatives with cosine below it cost nothing")
    negative_weight = param("negative_weight", "CCL weight w of the negatives' mean hinge")
    dropout = param("dropout", "dropout on the user vector before normalisation")


class SimpleX(TwoTowerEstimator, SimpleXParams):
    """SimpleX retrieval model (see the module docstring); ``fit(train)`` → ``SimpleXModel``.

    Defaults are the best settings found on ml-100k (holdout 3, positives > 2, Recall@20); see
    ``spark_retrieval/models/two_tower/README.md`` for the search.
    """

    family = "simplex"

    def __init__(
        self,
        *,
        num_negatives: int = 100,
        alpha: float = 0.75,
        gate: float = 0.5,
        margin: float = 0.9,
        negative_weight: float = 10.0,
        dropout: float = 0.1,
        embedding_dim: int | None = None,
        schema: str = "simplex_movielens",
        positive_threshold: float = 2.0,
        epochs: int = 10,
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
        return CCL

    def network_options(self) -> dict[str, Any]:
        return {"gate": float(self.get("gate")), "dropout": float(self.get("dropout"))}

    def objective_options(self) -> dict[str, float]:
        return {"margin": float(self.get("margin")), "negative_weight": float(self.get("negative_weight"))}

    def check_family_params(self, schema: FeatureSchema) -> None:
        check(is_number(self.get("gate")) and 0 <= self.get("gate") <= 1, f"gate must be in [0, 1], got {self.get('gate')!r}")
        check(is_number(self.get("margin")) and -1 <= self.get("margin") <= 1, f"margin must be in [-1, 1], got {self.get('margin')!r}")
        check(
            is_number(self.get("negative_weight")) and self.get("negative_weight") >= 0,
            f"negative_weight must be >= 0, got {self.get('negative_weight')!r}",
        )
        check(is_number(self.get("dropout")) and 0 <= self.get("dropout") < 1, f"dropout must be in [0, 1), got {self.get('dropout')!r}")
        sizes = {f.embedding_dim for f in schema.features}
        check(len(sizes) == 1, f"SimpleX sums embeddings, so every feature needs the same embedding_dim; schema has {sorted(sizes)}")


class SimpleXModel(TwoTowerModel, SimpleXParams):
    """A fitted SimpleX: ``recommend``, ``item_embeddings``, ``user_embeddings``, ``save``/``load``."""


SimpleX.model_class = SimpleXModel
