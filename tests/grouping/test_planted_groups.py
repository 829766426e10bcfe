"""PlantedGroups: the block correlation structure of K groups of MMoE tasks, and its checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl.data.sources import PlantedGroups


def test_names_groups_and_shared_inputs() -> None:
    src = PlantedGroups(groups=2, tasks_per_group=3, num_train=50, num_val=10, num_test=0, input_dim=8)
    assert src.tasks == ("g0_t0", "g0_t1", "g0_t2", "g1_t0", "g1_t1", "g1_t2")
    assert src.group_labels == (0, 0, 0, 1, 1, 1)
    assert src.groups == [["g0_t0", "g0_t1", "g0_t2"], ["g1_t0", "g1_t1", "g1_t2"]]
    splits = src.load()
    assert list(splits) == list(src.tasks) and src.input_spec() == {"num_numeric": 8, "cardinalities": []}
    x = splits["g0_t0"].train.inputs["numeric"]
    assert x.shape == (50, 8) and x.dtype == torch.float32
    assert all(splits[t].train.inputs["numeric"] is x for t in src.tasks)
    assert splits["g1_t2"].val.targets.shape == (10,) and splits["g1_t2"].test is None


@pytest.mark.parametrize(("groups", "m", "p"), [(3, 3, 0.9), (2, 4, -0.2), (4, 2, 0.5), (3, 1, 0.0)])
def test_weights_are_correlated_within_and_orthogonal_across_groups(groups: int, m: int, p: float) -> None:
    src = PlantedGroups(groups=groups, tasks_per_group=m, correlation=p, scale=1.5, num_train=5, input_dim=16)
    src.load()
    block = (1 - p) * torch.eye(m, dtype=torch.float64) + p
    expected = 1.5**2 * torch.block_diag(*[block] * groups)
    assert torch.allclose(src.weights @ src.weights.T, expected, atol=1e-9)
    assert torch.allclose(src.correlation_matrix() * 1.5**2, expected)


def test_linear_parts_and_labels_have_the_block_structure() -> None:
    """Linear parts: correlation p within a group, 0 across; labels: high within, about 0 across."""
    src = PlantedGroups(groups=3, tasks_per_group=2, correlation=0.8, num_train=20000, num_val=0, num_test=0)
    splits = src.load()
    x = splits["g0_t0"].train.inputs["numeric"].double()
    linear = np.corrcoef((x @ src.weights.T).T.numpy())
    assert np.abs(linear - src.correlation_matrix().numpy()).max() < 0.03  # sampling error ~ 1/sqrt(n)
    labels = np.corrcoef(np.stack([splits[t].train.targets.numpy() for t in src.tasks]))
    same = np.equal.outer(src.group_labels, src.group_labels) & ~np.eye(6, dtype=bool)
    assert (
        labels[same].min() > 0.5
        and np.abs(labels[~np.equal.outer(src.group_labels, src.group_labels)]).max() < 0.03
    )


def test_labels_follow_the_mmoe_generator() -> None:
    src = PlantedGroups(groups=2, tasks_per_group=2, num_train=20000, num_val=0, num_test=0, seed=3)
    splits = src.load()
    linear = splits["g0_t0"].train.inputs["numeric"].double() @ src.weights.T
    sines = torch.sin(linear[:, :, None] * src.alphas + src.betas).sum(dim=2)
    for i, task in enumerate(src.tasks):
        noise = splits[task].train.targets.double() - linear[:, i] - sines[:, i]
        assert abs(float(noise.mean())) < 0.005 and abs(float(noise.std()) - 0.1) < 0.005


def test_sines_per_group_give_each_group_its_own_nonlinearity() -> None:
    src = PlantedGroups(
        groups=3, tasks_per_group=2, num_sines=4, num_train=5000, num_val=0, num_test=0, sines_per_group=True
    )
    splits = src.load()
    assert src.alphas.shape == src.betas.shape == (6, 4)
    for rows in (src.alphas, src.betas):
        assert (
            torch.equal(rows[0], rows[1])
            and torch.equal(rows[4], rows[5])
            and not torch.equal(rows[1], rows[2])
        )
    linear = splits["g0_t0"].train.inputs["numeric"].double() @ src.weights.T
    sines = torch.sin(linear[:, :, None] * src.alphas + src.betas).sum(dim=2)
    for i, task in enumerate(src.tasks):
        noise = splits[task].train.targets.double() - linear[:, i] - sines[:, i]
        assert abs(float(noise.std()) - 0.1) < 0.005


@pytest.mark.parametrize("sines_per_group", [False, True])
def test_tasks_can_draw_their_own_inputs(sines_per_group: bool) -> None:
    src = PlantedGroups(
        groups=2,
        tasks_per_group=2,
        num_train=4000,
        num_val=7,
        num_test=3,
        seed=1,
        shared_inputs=False,
        sines_per_group=sines_per_group,
    )
    splits = src.load()
    inputs = [splits[t].train.inputs["numeric"] for t in src.tasks]
    assert all(x.shape == (4000, 32) for x in inputs) and not torch.equal(inputs[0], inputs[1])
    assert splits["g1_t0"].val.inputs["numeric"].shape == (7, 32) and len(splits["g1_t0"].test) == 3
    # Every task's labels are the generator applied to its own inputs; with different inputs, even two
    # tasks of a group have uncorrelated labels row by row.
    for i, (task, x) in enumerate(zip(src.tasks, inputs, strict=True)):
        linear = x.double() @ src.weights[i]
        alphas, betas = (src.alphas[i], src.betas[i]) if sines_per_group else (src.alphas, src.betas)
        noise = (
            splits[task].train.targets.double() - linear - torch.sin(linear[:, None] * alphas + betas).sum(1)
        )
        assert abs(float(noise.std()) - 0.1) < 0.005
    within = np.corrcoef(splits["g0_t0"].train.targets.numpy(), splits["g0_t1"].train.targets.numpy())[0, 1]
    assert abs(within) < 0.06


def test_classification_labels_are_balanced_thresholds_of_the_regression_labels() -> None:
    kwargs = dict(groups=2, tasks_per_group=2, num_train=1000, num_val=200, num_test=0, seed=5)
    regression = PlantedGroups(**kwargs).load()
    src = PlantedGroups(task_type="classification", **kwargs)
    classification = src.load()
    for i, task in enumerate(src.tasks):
        y = classification[task].train.targets
        assert y.dtype == torch.int64 and set(y.tolist()) == {0, 1}
        assert abs(float(y.float().mean()) - 0.5) <= 0.001  # the training median splits it in half
        raw = regression[task].val.targets.double()
        assert torch.equal(classification[task].val.targets, (raw > src.thresholds[i]).long())


def test_deterministic_under_seed() -> None:
    a, b = PlantedGroups(num_train=30, seed=2).load(), PlantedGroups(num_train=30, seed=2).load()
    c = PlantedGroups(num_train=30, seed=3).load()
    assert torch.equal(a["g1_t1"].train.targets, b["g1_t1"].train.targets)
    assert not torch.equal(a["g1_t1"].train.targets, c["g1_t1"].train.targets)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"groups": 0}, "groups"),
        ({"tasks_per_group": 2.0}, "tasks_per_group"),
        ({"correlation": 1.2}, "correlation"),
        ({"tasks_per_group": 3, "correlation": -0.6}, "correlation"),  # below -1/2
        ({"task_type": "ranking"}, "task_type"),
        ({"groups": 4, "tasks_per_group": 3, "input_dim": 11}, "input_dim"),
        ({"num_train": 0}, "num_train"),
        ({"num_sines": -1}, "num_sines"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"scale": 0.0}, "scale"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PlantedGroups(**kwargs)
