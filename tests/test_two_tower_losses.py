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


class _LookupNetwork(torch.nn.Module):
    """A network reduced to two embedding tables: enough to drive ``TrainingObjective`` on sampled negatives."""

    def __init__(self, users: int, items: int, dim: int):
        super().__init__()
        self.users, self.items = torch.nn.Embedding(users, dim), torch.nn.Embedding(items, dim)

    def input_columns(self, tower):
        return ["user"]

    def user_vectors(self, inputs):
        return self.users(inputs["user"])

    def item_vectors(self, inputs):
        return torch.nn.functional.normalize(torch.tanh(self.items(inputs["item"])), dim=-1)


@pytest.mark.parametrize("loss", ["bce", "ccl"])
def test_scoring_sampled_negatives_has_the_gradients_of_plain_indexing_to_the_bit(loss):
    """The objective gathers the distinct items' vectors with ``index_select`` (its backward adds in row order,
    with no sort): the same loss and gradients, bit for bit, as indexing with ``[position]`` under torch's
    deterministic algorithms, on the threads training uses, so the faster gather changes no trained weight."""
    from spark_retrieval.data.sampling import NEGATIVE_ITEMS
    from spark_retrieval.models.two_tower.losses import TrainingObjective
    from spark_retrieval.models.two_tower.training_data import POSITIVE_ITEM

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    batch = {
        "user": torch.randint(0, 50, (256,), generator=generator),
        POSITIVE_ITEM: torch.randint(1, 300, (256,), generator=generator),
        NEGATIVE_ITEMS: torch.randint(1, 300, (256, 40), generator=generator),
    }
    network = _LookupNetwork(50, 300, 32)
    objective = TrainingObjective(network, loss, {"item": torch.arange(300)}, torch.zeros(300), 0.1, 0.5, 2.0)

    def gathered_by_indexing(batch):
        users = network.user_vectors(batch)
        candidates = torch.cat([batch[POSITIVE_ITEM].unsqueeze(1), batch[NEGATIVE_ITEMS]], dim=1)
        distinct, position = torch.unique(candidates, return_inverse=True)
        scores = torch.einsum("bd,bnd->bn", users, network.item_vectors({"item": distinct})[position])
        if loss == "bce":
            return bce_loss(scores[:, 0] / 0.1, scores[:, 1:] / 0.1)
        return cosine_contrastive_loss(scores[:, 0], scores[:, 1:], 0.5, 2.0)

    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    try:
        results = []
        for forward in (objective, gathered_by_indexing):
            network.zero_grad()
            value = forward(batch)
            value.backward()
            results.append((value.detach().clone(), [p.grad.clone() for p in network.parameters()]))
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
    (ours, our_grads), (reference, reference_grads) = results
    assert torch.equal(ours, reference)
    assert all(torch.equal(a, b) for a, b in zip(our_grads, reference_grads)) and our_grads[1].abs().sum() > 0
