"""Ready configs for groups of tasks: the user's config, resolved, restricted to a group's tasks.

`resolve_config` resolves the user's ``--config`` files with the ``mtl fit`` parser
(`mtl.ablation.config_parser.ConfigParser`: later files override earlier ones exactly as in ``mtl
fit``, nothing is built) and returns the complete config with every default, as ``mtl fit
--print_config`` shows it. `restrict_config` keeps a group's tasks: every mapping keyed by task names
(``model.heads``, ``model.loss_weights``) keeps the group's keys, and every list that names all the
tasks (the data source's ``tasks``) becomes the group's tasks. A data source that does not select its
tasks by name (e.g. one whose ``tasks`` is a count) cannot be restricted; `restriction_problem` says
so before any work is done. A `SpecifiedSampler`'s ``probabilities`` (one per task, by position)
keep the group's entries, rescaled to sum to 1; other settings that list one value per task by
position are not recognised and must be set per group by hand.
`weight_config` keeps every task and scales the tasks' loss weights instead (STG-MTL's soft groups).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mtl.ablation.config_parser import ConfigParser
from mtl.ablation.resolved import sampler_for_tasks
from mtl.ablation.resolved import tasks as config_tasks

__all__ = ["resolve_config", "restrict_config", "restriction_problem", "weight_config", "write_config"]

#: Options of the ``mtl fit`` command line that belong to one run, not to a config.
_RUN_OPTIONS = ("test_after_fit", "results_file")


def resolve_config(configs: Sequence[str | Path]) -> dict[str, Any]:
    """The complete ``mtl fit`` config that ``--config c1 --config c2 ...`` gives, as a plain dict."""
    names = [str(c) for c in configs]
    config = ConfigParser(names).resolve(names)
    for option in _RUN_OPTIONS:
        config.pop(option, None)
    return config


def _restrict(node: Any, tasks: set[str], keep: list[str]) -> Any:
    if isinstance(node, Mapping):
        if node and set(node) <= tasks:
            return {k: _restrict(v, tasks, keep) for k, v in node.items() if k in keep}
        return {k: _restrict(v, tasks, keep) for k, v in node.items()}
    if isinstance(node, list):
        if node and all(isinstance(v, str) for v in node) and set(node) == tasks:
            return [t for t in node if t in keep]
        return [_restrict(v, tasks, keep) for v in node]
    return node


def restriction_problem(config: Mapping[str, Any]) -> str | None:
    """Why ``config`` cannot be restricted to a group of tasks, or ``None`` when it can."""
    tasks = config_tasks(config)
    source = ((config.get("data") or {}).get("source") or {}).get("init_args") or {}
    listed = source.get("tasks")
    if not isinstance(listed, list) or set(listed) != set(tasks):
        return (
            f"Expected the data source to select its tasks by name (`data.source.init_args.tasks` listing "
            f"{tasks}), but got `tasks: {listed!r}`. A group's config keeps its tasks by rewriting that list; "
            "use a source that takes `tasks` (TextTasks, CensusIncome, MultiMNIST) to get group configs."
        )
    return None


def restrict_config(config: Mapping[str, Any], group: Sequence[str]) -> dict[str, Any]:
    """``config`` (resolved) training only the tasks of ``group``."""
    tasks = config_tasks(config)
    unknown = [t for t in group if t not in tasks]
    if not group or unknown:
        raise ValueError(f"Expected a non-empty group of the config's tasks {tasks}, but got {list(group)}.")
    problem = restriction_problem(config)
    if problem is not None:
        raise ValueError(problem)
    keep = [t for t in tasks if t in group]
    restricted = _restrict(dict(config), set(tasks), keep)
    mean_over = restricted["model"].get("mean_over")
    if isinstance(mean_over, list):  # a subset of the tasks (all of them are trimmed above)
        restricted["model"] = {
            **restricted["model"],
            "mean_over": [t for t in mean_over if t in keep] or None,
        }
    sampler = sampler_for_tasks(config, keep)
    if sampler is not None:
        restricted["data"] = {**restricted["data"], "sampler": sampler}
    return restricted


def weight_config(
    config: Mapping[str, Any], weights: Mapping[str, float], mean_over: Sequence[str] | None = None
) -> dict[str, Any]:
    """``config`` (resolved) training every task, each task's loss weight multiplied by ``weights[task]``
    (STG-MTL's membership-weighted cluster models; a task the config gives no weight has weight 1),
    and with ``mean_over`` the tasks whose primary metrics ``val/mean`` (the checkpoint's monitor)
    averages: the tasks the model serves."""
    tasks = config_tasks(config)
    if sorted(weights) != sorted(tasks):
        raise ValueError(
            f"Expected a weight for each of the config's tasks {tasks}, but got {sorted(weights)}."
        )
    model = dict(config["model"])
    base = model.get("loss_weights") or {}
    model["loss_weights"] = {t: float(base.get(t, 1.0)) * float(weights[t]) for t in tasks}
    if mean_over is not None:
        model["mean_over"] = [t for t in tasks if t in mean_over]
    return {**config, "model": model}


def write_config(path: Path, config: Mapping[str, Any], header: str) -> Path:
    """Write ``config`` as YAML under a comment ``header`` (each line prefixed with ``# ``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comment + yaml.safe_dump(dict(config), sort_keys=False))
    return path
