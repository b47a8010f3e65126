"""The training objective: a module whose forward maps one batch of examples to the loss.

Putting the loss inside ``forward`` is what lets DDP (TorchDistributor) and Horovod drive the same code.
"""

from __future__ import annotations

import torch
from torch import nn

from .losses import BCE, CCL, SAMPLED_SOFTMAX, bce_loss, cosine_contrastive_loss, sampled_softmax_loss
from .network import TwoTowerNetwork
from .layout import NEGATIVE_ITEMS, POSITIVE_ITEM
from .schema import encoded_column


class TrainingObjective(nn.Module):
    """``item_features``: per item-tower input column, a tensor indexed by item index (row 0 = unknown).
    ``log_q``: log of each item's share of the positives (for the sampled-softmax logQ correction).
    """

    def __init__(
        self,
        network: TwoTowerNetwork,
        loss: str,
        item_features: dict[str, torch.Tensor],
        log_q: torch.Tensor,
        temperature: float = 1.0,
        margin: float = 0.0,
        negative_weight: float = 1.0,
    ):
        super().__init__()
        self.network = network
        self.loss = loss
        # Plain attributes, not buffers: constant lookup tables that DDP must not broadcast every step.
        self.item_features = item_features
        self.log_q = log_q
        self.temperature = temperature
        self.margin = margin
        self.negative_weight = negative_weight
        self.user_columns = network.input_columns("user")

    def batch_columns(self) -> list[str]:
        extra = [] if self.loss == SAMPLED_SOFTMAX else [NEGATIVE_ITEMS]
        return self.user_columns + [POSITIVE_ITEM] + extra

    def item_inputs(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        return {column: table[items] for column, table in self.item_features.items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        users = self.network.user_vectors({c: batch[c] for c in self.user_columns})
        positives = batch[POSITIVE_ITEM]
        if self.loss == SAMPLED_SOFTMAX:
            items = self.network.item_vectors(self.item_inputs(positives))
            return sampled_softmax_loss(users, items, positives, self.log_q[positives], self.temperature)
        candidates = torch.cat([positives.unsqueeze(1), batch[NEGATIVE_ITEMS]], dim=1)
        # Score each distinct item once: a batch's candidates repeat popular items many times over.
        distinct, position = torch.unique(candidates, return_inverse=True)
        vectors = self.network.item_vectors(self.item_inputs(distinct))[position]
        scores = torch.einsum("bd,bnd->bn", users, vectors)
        if self.loss == BCE:
            logits = scores / self.temperature
            return bce_loss(logits[:, 0], logits[:, 1:])
        if self.loss == CCL:
            return cosine_contrastive_loss(scores[:, 0], scores[:, 1:], self.margin, self.negative_weight)
        raise ValueError(f"unknown loss {self.loss!r}")


def item_feature_columns(network: TwoTowerNetwork) -> list[str]:
    return [encoded_column(f) for f in network.schema.item]
