"""Training losses of the two-tower models, and the objective module that applies them to a batch.

The losses are pure functions of score tensors. ``TrainingObjective`` is a module whose forward maps one
batch of examples to the loss: putting the loss inside ``forward`` is what lets DDP (TorchDistributor) and
Horovod drive the same code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...data.sampling import NEGATIVE_ITEMS
from .network import TwoTowerNetwork
from .schema import encoded_column
from .training_data import POSITIVE_ITEM

BCE = "bce"
SAMPLED_SOFTMAX = "sampled_softmax"
CCL = "ccl"


def bce_loss(positive_logits: torch.Tensor, negative_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over all (1 + N) scored pairs of a batch: positives ``[B]`` label 1, negatives ``[B, N]`` label 0."""
    logits = torch.cat([positive_logits.unsqueeze(1), negative_logits], dim=1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(logits, labels)


def sampled_softmax_loss(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    item_ids: torch.Tensor,
    log_q: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Softmax over in-batch items (row i's positive is item i), with logQ correction and hit masking.

    logits[i, j] = <u_i, v_j> / temperature - log q_j, where q_j is the probability that item j shows up
    in a batch (its share of the positives); a column j != i holding row i's own item is an accidental
    hit and is removed from row i's softmax.
    """
    logits = user_vectors @ item_vectors.T / temperature - log_q.unsqueeze(0)
    same_item = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)
    accidental = same_item & ~torch.eye(len(item_ids), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(accidental, torch.finfo(logits.dtype).min)
    return F.cross_entropy(logits, torch.arange(len(item_ids), device=logits.device))


def cosine_contrastive_loss(
    positive_cosine: torch.Tensor,
    negative_cosine: torch.Tensor,
    margin: float,
    negative_weight: float,
) -> torch.Tensor:
    """SimpleX's CCL, batch mean of (1 - ŷ⁺) + w / N · Σ_j max(0, ŷ⁻_j - margin)."""
    num_negatives = negative_cosine.shape[1]
    negative_term = torch.relu(negative_cosine - margin).sum(dim=1) * (negative_weight / num_negatives)
    return (1.0 - positive_cosine + negative_term).mean()


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
        # index_select's backward adds each item's gradients in row order (index_add_); indexing with [position]
        # would need the sort of a deterministic index_put_, a fifth of a 100-negative step, for the same sums.
        vectors = self.network.item_vectors(self.item_inputs(distinct)).index_select(0, position.flatten())
        vectors = vectors.view(*position.shape, -1)
        scores = torch.einsum("bd,bnd->bn", users, vectors)
        if self.loss == BCE:
            logits = scores / self.temperature
            return bce_loss(logits[:, 0], logits[:, 1:])
        if self.loss == CCL:
            return cosine_contrastive_loss(scores[:, 0], scores[:, 1:], self.margin, self.negative_weight)
        raise ValueError(f"unknown loss {self.loss!r}")


def item_feature_columns(network: TwoTowerNetwork) -> list[str]:
    return [encoded_column(f) for f in network.schema.item]
