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


def test_masked_bce_and_ccl_leave_the_masked_negatives_out():
    positive, negative = torch.tensor([2.0, -0.5]), torch.tensor([[-1.0, 0.5], [0.3, 1.5]])
    mask = torch.tensor([[True, False], [True, True]])
    expected = (softplus(-2.0) + softplus(-1.0) + softplus(0.5) + softplus(0.3) + softplus(1.5)) / 5
    assert bce_loss(positive, negative, mask).item() == pytest.approx(expected, rel=1e-6)
    assert bce_loss(positive, negative, torch.ones_like(mask)).item() == pytest.approx(bce_loss(positive, negative).item(), rel=1e-6)
    cosine = torch.tensor([[0.95, 0.99], [0.5, 0.97]])
    ccl = cosine_contrastive_loss(torch.tensor([0.8, 0.2]), cosine, margin=0.9, negative_weight=2.0, negative_mask=mask)
    expected = ((1 - 0.8) + 2 / 2 * 0.05 + (1 - 0.2) + 2 / 2 * 0.07) / 2
    assert ccl.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss", ["bce", "ccl"])
def test_negatives_shared_by_a_batch_score_like_the_same_negatives_given_to_every_row(loss):
    """A ``[N]`` row of shared negatives is the ``[B, N]`` case with every row given the same items, except that a
    row's own positive among them is masked for that row (row 0's positive is put among the shared negatives)."""
    from spark_retrieval.data.sampling import NEGATIVE_ITEMS
    from spark_retrieval.models.two_tower.losses import PER_BATCH, TrainingObjective
    from spark_retrieval.models.two_tower.training_data import POSITIVE_ITEM

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(2)
    positives = torch.randint(1, 300, (64,), generator=generator)
    shared = torch.cat([torch.randint(1, 300, (19,), generator=generator), positives[:1]])
    users = torch.randint(0, 50, (64,), generator=generator)
    network = _LookupNetwork(50, 300, 16)
    objective = TrainingObjective(network, loss, {"item": torch.arange(300)}, torch.zeros(300), 0.1, 0.5, 2.0, PER_BATCH)
    assert NEGATIVE_ITEMS not in objective.batch_columns()
    ours = objective({"user": users, POSITIVE_ITEM: positives, NEGATIVE_ITEMS: shared})

    user_vectors = network.user_vectors({"user": users})
    positive_scores = (user_vectors * network.item_vectors({"item": positives})).sum(dim=1)
    negative_scores = user_vectors @ network.item_vectors({"item": shared}).T
    mask = shared.unsqueeze(0) != positives.unsqueeze(1)
    assert not mask[0, -1] and mask.sum() < mask.numel()
    if loss == "bce":
        reference = bce_loss(positive_scores / 0.1, negative_scores / 0.1, mask)
    else:
        reference = cosine_contrastive_loss(positive_scores, negative_scores, 0.5, 2.0, mask)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)


def test_batch_negative_sampler_is_seeded_and_draws_in_proportion_to_the_weights():
    import numpy as np

    from spark_retrieval.models.two_tower.losses import BatchNegativeSampler

    weights = np.array([0.0, 1.0, 0.0, 3.0, 6.0])  # index 0 (unknown) and 2 are never drawn
    sampler = BatchNegativeSampler(weights, num_negatives=1000)
    first = [next(sampler.epoch(seed=7, epoch=2, rank=0)) for _ in range(2)]
    assert torch.equal(first[0], first[1])  # a fresh epoch stream starts over: resuming redraws the same items
    stream = sampler.epoch(seed=7, epoch=2, rank=0)
    draws = torch.cat([next(stream) for _ in range(50)]).numpy()
    assert not torch.equal(torch.from_numpy(draws[:1000]), torch.from_numpy(draws[1000:2000]))
    assert set(np.unique(draws)) == {1, 3, 4}
    shares = np.bincount(draws, minlength=5) / len(draws)
    assert shares[[1, 3, 4]] == pytest.approx([0.1, 0.3, 0.6], abs=0.01)
    for other in ({"seed": 8, "epoch": 2, "rank": 0}, {"seed": 7, "epoch": 3, "rank": 0}, {"seed": 7, "epoch": 2, "rank": 1}):
        assert not torch.equal(next(sampler.epoch(**other)), first[0])
