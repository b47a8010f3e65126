import math

import pytest
import torch

from spark_retrieval.models.two_tower.losses import bce_loss, cosine_contrastive_loss, sampled_softmax_loss


def softplus(x):
    return math.log1p(math.exp(x))


def test_bce_averages_over_positive_and_negative_pairs():
    loss = bce_loss(torch.tensor([2.0]), torch.tensor([[-1.0, 0.5]]))
    expected = (softplus(-2.0) + softplus(-1.0) + softplus(0.5)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_sampled_softmax_with_logq_correction_and_accidental_hits():
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    item_ids = torch.tensor([7, 8, 7])  # rows 0 and 2 share item 7: each is an accidental hit for the other
    q = [0.5, 0.25, 0.5]
    loss = sampled_softmax_loss(users, items, item_ids, torch.log(torch.tensor(q)), temperature=0.5)

    def row_loss(logits, target, masked):
        kept = [x for j, x in enumerate(logits) if j not in masked]
        return -logits[target] + math.log(sum(math.exp(x) for x in kept))

    dots = [[1, 0, 1], [0, 1, 0], [1, 1, 1]]
    logits = [[d / 0.5 - math.log(q[j]) for j, d in enumerate(row)] for row in dots]
    expected = (row_loss(logits[0], 0, {2}) + row_loss(logits[1], 1, set()) + row_loss(logits[2], 2, {0})) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_sampled_softmax_without_correction_or_hits_is_plain_cross_entropy():
    users, items = torch.randn(4, 3), torch.randn(4, 3)
    loss = sampled_softmax_loss(users, items, torch.arange(4), torch.zeros(4), temperature=1.0)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(users @ items.T, torch.arange(4)).item())


def test_cosine_contrastive_loss():
    positive = torch.tensor([0.8, 0.2])
    negative = torch.tensor([[0.95, 0.5, 0.91], [0.1, 0.99, 0.9]])
    loss = cosine_contrastive_loss(positive, negative, margin=0.9, negative_weight=3.0)
    row0 = (1 - 0.8) + 3 / 3 * ((0.95 - 0.9) + (0.91 - 0.9))
    row1 = (1 - 0.2) + 3 / 3 * (0.99 - 0.9)
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-5)
