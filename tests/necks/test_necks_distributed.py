"""`global_sum`: the sum over ranks in value, this rank's share (scaled by the world size) in gradient;
and the router losses of summed shard statistics, which are those of the whole batch.

Two ranks are simulated by patching the collective; the real thing runs under torchrun in
tests/distributed/test_ddp_necks.py.
"""

from __future__ import annotations

import torch

from mtl.necks import distributed
from mtl.necks.distributed import global_sum, world_size
from mtl.necks.router_losses import (
    assignment_counts,
    balance_from_sums,
    load_balancing_loss,
    mutual_information_from_sums,
    mutual_information_loss,
    weighted_sum,
)


def test_a_single_process_sum_is_the_tensor_itself():
    local = torch.tensor([1.0, 2.0], requires_grad=True)
    assert world_size() == 1
    assert global_sum(local) is local


def test_two_ranks_sum_values_and_scale_the_local_gradient(monkeypatch):
    other = torch.tensor([10.0, 1e-9])  # what the other rank contributes

    def all_reduce(tensor):
        tensor += other

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "all_reduce", all_reduce)
    local = torch.tensor([1.0, 3.0], requires_grad=True)
    total = global_sum(local)
    assert torch.equal(total, torch.tensor([1.0, 3.0]) + other)  # exact, tiny terms included
    (total * torch.tensor([1.0, 5.0])).sum().backward()
    # d/dlocal = W · upstream: DDP's mean over the 2 ranks then gives the one-rank gradient.
    assert local.grad.tolist() == [2.0, 10.0]


def test_router_losses_of_summed_shard_statistics_equal_those_of_the_whole_batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 4, generator=generator)
    probs, top = torch.softmax(logits, -1), logits.topk(2, -1).indices
    task = torch.tensor([0] * 7 + [1] * 5)  # two tasks; the shards split both unevenly
    shards = [torch.arange(0, 5), torch.arange(5, 12)]

    def sums(rows):
        per_task = [weighted_sum(probs[rows][task[rows] == t], None) for t in (0, 1)]
        return (
            torch.stack([p for p, _ in per_task]),
            torch.stack([n for _, n in per_task]),
            weighted_sum(assignment_counts(top[rows], 4), None)[0],
        )

    prob_sums, units, assignments = (sum(parts) for parts in zip(*(sums(r) for r in shards), strict=True))
    torch.testing.assert_close(
        balance_from_sums(prob_sums.sum(0), assignments, units.sum(), 2), load_balancing_loss(probs, top)
    )
    torch.testing.assert_close(
        mutual_information_from_sums(prob_sums, units),
        mutual_information_loss([probs[task == 0], probs[task == 1]]),
    )
    # The mean of the shards' own losses is not the loss of the batch: why the sums are added first.
    shard_mean = sum(load_balancing_loss(probs[r], top[r]) for r in shards) / 2
    assert not torch.allclose(shard_mean, load_balancing_loss(probs, top))
