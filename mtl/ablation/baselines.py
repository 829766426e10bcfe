"""Single-task baselines: the base config with one task only, the reference of Δm.

The overlay keeps one head and tells the data source to serve only that task. It sets the whole
``model.heads`` mapping (an overlay replaces a dict-typed field, which is what drops the other heads)
to the base config's resolved head of the task, so the baseline's head and encoder are exactly the
base's. Task-keyed settings that would name absent tasks (``model.loss_weights``) are cut to the task,
and a `SpecifiedSampler`'s per-task ``probabilities`` become ``[1.0]`` (`sampler_for_tasks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtl.ablation.resolved import get_path, sampler_for_tasks

__all__ = ["single_task_overlay"]


def single_task_overlay(base: Mapping[str, Any], task: str) -> dict[str, Any]:
    """The config overlay that turns the resolved ``base`` config into task ``task`` alone.

    Raises:
        ValueError: the task has no head, or the data source does not select tasks by name.
    """
    heads = get_path(base, "model.heads")
    if task not in heads:
        raise ValueError(
            f"Expected `task` to be one of the base config's tasks {list(heads)}, but got `{task}`."
        )
    source = get_path(base, "data.source")
    selected = source.get("init_args", {}).get("tasks") if isinstance(source, Mapping) else None
    if not isinstance(selected, list) or task not in selected:
        name = source.get("class_path") if isinstance(source, Mapping) else source
        raise ValueError(
            f"Expected the data source ({name}) to select its tasks by name with `tasks: [...]` including "
            f"`{task}`, but it has `tasks: {selected!r}`, so a single-task baseline cannot be built. Run the "
            "sweep with `--no-baselines`, or run the baselines yourself."
        )
    model: dict[str, Any] = {"heads": {task: heads[task]}}
    weights = base["model"].get("loss_weights")
    if isinstance(weights, Mapping):
        model["loss_weights"] = {task: weights[task]} if task in weights else None
    if base["model"].get("mean_over") is not None:
        model["mean_over"] = None  # the baseline's mean is its one task
    data: dict[str, Any] = {"source": {"init_args": {"tasks": [task]}}}
    sampler = sampler_for_tasks(base, [task])
    if sampler is not None:
        data["sampler"] = sampler
    return {"model": model, "data": data}
