"""Training losses of the two-tower models, as pure functions of score tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
