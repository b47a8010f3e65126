"""Training losses of the two-tower models, and the objective module that applies them to a batch.

The losses are pure functions of score tensors. ``TrainingObjective`` is a module whose forward maps one
batch of examples to the loss: putting the loss inside ``forward`` is what lets DDP (TorchDistributor) and
Horovod drive the same code.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
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
PER_EXAMPLE = "per_example"
PER_BATCH = "per_batch"
NEGATIVE_SAMPLING = (PER_EXAMPLE, PER_BATCH)


def bce_loss(
    positive_logits: torch.Tensor, negative_logits: torch.Tensor, negative_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy over all (1 + N) scored pairs of a batch: positives ``[B]`` label 1, negatives ``[B, N]`` label 0.

    ``negative_mask`` (``[B, N]``, bool): the negatives that count; the mean is over the positives and those.
    """
    logits = torch.cat([positive_logits.unsqueeze(1), negative_logits], dim=1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    if negative_mask is None:
        return F.binary_cross_entropy_with_logits(logits, labels)
    weights = torch.cat([torch.ones_like(positive_logits).unsqueeze(1), negative_mask.to(logits.dtype)], dim=1)
    return F.binary_cross_entropy_with_logits(logits, labels, weight=weights, reduction="sum") / weights.sum()


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
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """SimpleX's CCL, batch mean of (1 - ŷ⁺) + w / N · Σ_j max(0, ŷ⁻_j - margin); a negative outside
    ``negative_mask`` (``[B, N]``, bool) adds nothing."""
    num_negatives = negative_cosine.shape[1]
    hinge = torch.relu(negative_cosine - margin)
    if negative_mask is not None:
        hinge = hinge * negative_mask.to(hinge.dtype)
    negative_term = hinge.sum(dim=1) * (negative_weight / num_negatives)
    return (1.0 - positive_cosine + negative_term).mean()


class TrainingObjective(nn.Module):
    """``item_features``: per item-tower input column, a tensor indexed by item index (row 0 = unknown).
    ``log_q``: log of each item's share of the positives (for the sampled-softmax logQ correction).

    The sampled-negative losses take a batch's ``NEGATIVE_ITEMS`` either per example (``[B, N]``, read from the
    example files) or shared by the batch (``[N]``, drawn by the training loop, ``BatchNegativeSampler``); a
    shared negative that is a row's own positive does not count for that row.
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
        negative_sampling: str = PER_EXAMPLE,
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
        self.negative_sampling = negative_sampling
        self.user_columns = network.input_columns("user")

    def batch_columns(self) -> list[str]:
        extra = [] if self.loss == SAMPLED_SOFTMAX or self.negative_sampling == PER_BATCH else [NEGATIVE_ITEMS]
        return self.user_columns + [POSITIVE_ITEM] + extra

    def item_inputs(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        return {column: table[items] for column, table in self.item_features.items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        users = self.network.user_vectors({c: batch[c] for c in self.user_columns})
        positives = batch[POSITIVE_ITEM]
        if self.loss == SAMPLED_SOFTMAX:
            items = self.network.item_vectors(self.item_inputs(positives))
            return sampled_softmax_loss(users, items, positives, self.log_q[positives], self.temperature)
        negatives = batch[NEGATIVE_ITEMS]
        shared = self.negative_sampling == PER_BATCH
        if shared:
            candidates = torch.cat([positives, negatives])
        else:
            candidates = torch.cat([positives.unsqueeze(1), negatives], dim=1)
        # Score each distinct item once: a batch's candidates repeat popular items many times over.
        distinct, position = torch.unique(candidates, return_inverse=True)
        distinct_vectors = self.network.item_vectors(self.item_inputs(distinct))
        if shared:
            # index_select's backward adds each item's gradients in row order (index_add_); indexing with
            # [position] would need the sort of a deterministic index_put_ for the same sums.
            vectors = distinct_vectors.index_select(0, position)
            count = len(positives)
            positive_scores = (users * vectors[:count]).sum(dim=1)
            negative_scores = users @ vectors[count:].T
            mask = negatives.unsqueeze(0) != positives.unsqueeze(1)
        else:
            scores = GatheredScores.apply(users, distinct_vectors, position)
            positive_scores, negative_scores, mask = scores[:, 0], scores[:, 1:], None
        if self.loss == BCE:
            return bce_loss(positive_scores / self.temperature, negative_scores / self.temperature, mask)
        if self.loss == CCL:
            return cosine_contrastive_loss(positive_scores, negative_scores, self.margin, self.negative_weight, mask)
        raise ValueError(f"unknown loss {self.loss!r}")


class GatheredScores(torch.autograd.Function):
    """``scores[b, n] = <users[b], vectors[position[b, n]]>`` (users ``[B, D]``, vectors ``[V, D]``, position ``[B, N]``).

    The forward is autograd's own (``index_select``, then ``einsum``). The backward computes the same numbers
    bit for bit, with less work. Each pair's gradient row ``grad[b, n] · users[b]`` is one exact product, and
    ``scatter_add_`` over a broadcast view of the index adds those rows per item in row order, as
    ``index_select``'s backward does. Autograd would get the same rows from a batched outer product (``bmm``
    with an inner size of 1) and copy them into ``[B, N, D]`` order, and ``index_add_`` under deterministic
    algorithms copies the index out to their shape for ``scatter_add_`` (in a 100-negative DSSM step: rows of
    26 MB, an int64 index of 53 MB).
    """

    @staticmethod
    def forward(ctx, users: torch.Tensor, vectors: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        gathered = vectors.index_select(0, position.flatten()).view(*position.shape, -1)
        ctx.save_for_backward(users, gathered, position)
        ctx.num_vectors = len(vectors)
        return torch.einsum("bd,bnd->bn", users, gathered)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        users, gathered, position = ctx.saved_tensors
        grad_users = grad_vectors = None
        if ctx.needs_input_grad[0]:
            grad_users = torch.bmm(grad.unsqueeze(1), gathered).squeeze(1)
        if ctx.needs_input_grad[1]:
            rows = torch.bmm(grad.unsqueeze(2), users.unsqueeze(1)).view(-1, users.shape[-1])
            # index_add_ under deterministic algorithms copies the index out to rows' shape (int64: twice their
            # bytes) for scatter_add_; a broadcast view of it is the same scatter without that copy.
            index = position.flatten().unsqueeze(1).expand(-1, rows.shape[1])
            grad_vectors = rows.new_zeros(ctx.num_vectors, rows.shape[1]).scatter_add_(0, index, rows)
        return grad_users, grad_vectors, None


class BatchNegativeSampler:
    """``num_negatives`` item indices per training step, shared by the whole batch, drawn with replacement
    with probability ∝ ``weights`` (one per item index: train count ** alpha, 0 = never drawn).

    One generator per (seed, epoch, rank): an epoch's draws are the same however often training is resumed.
    """

    def __init__(self, weights: np.ndarray, num_negatives: int):
        items = np.flatnonzero(weights > 0)
        if not len(items):
            raise ValueError("no item has a positive sampling weight")
        cumulative = np.cumsum(weights[items].astype(np.float64))
        self.items, self.cumulative, self.num_negatives = items, cumulative / cumulative[-1], num_negatives

    def epoch(self, seed: int, epoch: int, rank: int) -> Iterator[torch.Tensor]:
        rng = np.random.default_rng([seed, epoch, rank, 1])  # the shuffle's generator is [seed, epoch, rank]
        while True:
            drawn = np.searchsorted(self.cumulative, rng.random(self.num_negatives), side="right")
            yield torch.from_numpy(self.items[np.minimum(drawn, len(self.items) - 1)])


def item_feature_columns(network: TwoTowerNetwork) -> list[str]:
    return [encoded_column(f) for f in network.schema.item]
