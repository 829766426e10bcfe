"""Group configs: the resolved base config restricted to a group's tasks, and the refusal to restrict."""

from __future__ import annotations

import pytest

from mtl.grouping.configs import restrict_config, restriction_problem, weight_config

BASE = {
    "seed_everything": 0,
    "trainer": {
        "max_epochs": 3,
        "callbacks": [{"class_path": "Checkpoint", "init_args": {"monitor": "val/mean"}}],
    },
    "model": {
        "heads": {"a": {"class_path": "HeadA"}, "b": {"class_path": "HeadB"}, "c": {"class_path": "HeadC"}},
        "loss_weights": {"a": 1.0, "b": 2.0, "c": 0.5},
        "encoder": {"class_path": "Encoder", "init_args": {"labels": ["x", "y"]}},
    },
    "data": {"source": {"class_path": "Source", "init_args": {"tasks": ["a", "b", "c"], "size": 10}}},
}


def test_a_group_keeps_its_tasks_in_every_task_keyed_setting_and_nothing_else_changes() -> None:
    group = restrict_config(BASE, ["c", "a"])
    assert list(group["model"]["heads"]) == ["a", "c"]  # the config's task order
    assert group["model"]["loss_weights"] == {"a": 1.0, "c": 0.5}
    assert group["data"]["source"]["init_args"] == {"tasks": ["a", "c"], "size": 10}
    assert group["model"]["encoder"] == BASE["model"]["encoder"]  # a list that is no task list stays
    assert group["trainer"] == BASE["trainer"] and group["seed_everything"] == 0
    assert list(BASE["model"]["heads"]) == ["a", "b", "c"]  # the base is left as it was
    assert restrict_config(BASE, ["a", "b", "c"]) == BASE


def test_bad_groups_and_sources_without_task_names_are_refused() -> None:
    with pytest.raises(
        ValueError, match=r"Expected a non-empty group of the config's tasks \['a', 'b', 'c'\]"
    ):
        restrict_config(BASE, ["a", "z"])
    with pytest.raises(ValueError, match="non-empty group"):
        restrict_config(BASE, [])
    counted = {**BASE, "data": {"source": {"class_path": "Source", "init_args": {"tasks": 3}}}}
    problem = restriction_problem(counted)
    assert problem is not None and "select its tasks by name" in problem and "`tasks: 3`" in problem
    with pytest.raises(ValueError, match="select its tasks by name"):
        restrict_config(counted, ["a"])
    assert restriction_problem(BASE) is None


def test_weighted_config_keeps_every_task_and_multiplies_the_loss_weights() -> None:
    weighted = weight_config(BASE, {"a": 0.9, "b": 0.1, "c": 0.0})
    assert weighted["model"]["loss_weights"] == pytest.approx({"a": 0.9, "b": 0.2, "c": 0.0})
    assert list(weighted["model"]["heads"]) == ["a", "b", "c"] and weighted["data"] == BASE["data"]
    assert BASE["model"]["loss_weights"] == {"a": 1.0, "b": 2.0, "c": 0.5}  # the base is left as it was
    unweighted = {**BASE, "model": {k: v for k, v in BASE["model"].items() if k != "loss_weights"}}
    assert weight_config(unweighted, {"a": 0.5, "b": 0.25, "c": 0.25})["model"]["loss_weights"] == {
        "a": 0.5,
        "b": 0.25,
        "c": 0.25,
    }
    served = weight_config(BASE, {"a": 1, "b": 1, "c": 0}, mean_over=["b", "a"])
    assert served["model"]["mean_over"] == ["a", "b"]  # in the config's task order
    assert "mean_over" not in weight_config(BASE, {"a": 1, "b": 1, "c": 0})["model"]
    with pytest.raises(
        ValueError, match=r"Expected a weight for each of the config's tasks \['a', 'b', 'c'\]"
    ):
        weight_config(BASE, {"a": 1.0})


def test_a_specified_sampler_keeps_the_groups_share_rescaled() -> None:
    sampler = {
        "class_path": "mtl.data.samplers.SpecifiedSampler",
        "init_args": {"probabilities": [0.5, 0.2, 0.3]},
    }
    base = {**BASE, "data": {**BASE["data"], "sampler": sampler}}
    group = restrict_config(base, ["a", "c"])
    assert group["data"]["sampler"]["init_args"]["probabilities"] == pytest.approx([0.625, 0.375])
    assert base["data"]["sampler"]["init_args"]["probabilities"] == [0.5, 0.2, 0.3]  # left as it was
    assert restrict_config(base, ["b"])["data"]["sampler"]["init_args"]["probabilities"] == [1.0]
    zero = {
        **base,
        "data": {**base["data"], "sampler": {**sampler, "init_args": {"probabilities": [0, 1, 0]}}},
    }
    with pytest.raises(ValueError, match=r"give the tasks \['a', 'c'\] some probability"):
        restrict_config(zero, ["a", "c"])


def test_a_group_keeps_the_monitored_tasks_it_has() -> None:
    base = {**BASE, "model": {**BASE["model"], "mean_over": ["a", "b"]}}
    assert restrict_config(base, ["b", "c"])["model"]["mean_over"] == ["b"]
    assert restrict_config(base, ["c"])["model"]["mean_over"] is None  # none left: every task of the group
    every = {**BASE, "model": {**BASE["model"], "mean_over": ["a", "b", "c"]}}
    assert restrict_config(every, ["a", "c"])["model"]["mean_over"] == ["a", "c"]
