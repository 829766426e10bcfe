"""Facts a sweep reads from a resolved ``mtl fit`` config (the dict `ConfigParser.resolve` returns)."""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "class_path_modules",
    "fingerprint",
    "get_path",
    "primary_metrics",
    "sampler_for_tasks",
    "single_process",
    "tasks",
]

#: Settings that differ between runs of one configuration by design (seed, folder, loggers, bookkeeping).
_RUN_SPECIFIC = (
    ("seed_everything",),
    ("trainer", "default_root_dir"),
    ("trainer", "logger"),
    ("test_after_fit",),
    ("results_file",),
    ("ckpt_path",),
    ("config",),
)


def get_path(config: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` (``KeyError`` naming the missing part when absent)."""
    node: Any = config
    for i, part in enumerate(key.split(".")):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"`{'.'.join(key.split('.')[: i + 1])}`")
        node = node[part]
    return node


def fingerprint(config: Mapping[str, Any]) -> str:
    """A hash of everything that defines a run's result except its seed and where it writes.

    Two runs with the same fingerprint and seed train the same model, so a finished one can stand in
    for the other; a run folder whose fingerprint changed holds a different experiment. Settings that
    are ``None`` are left out, so a new optional setting (default ``None``) of a class leaves the
    fingerprints of earlier runs as they were (the resolved config always holds every setting, so
    ``None`` and absent only differ between versions of the code).
    """
    trimmed = copy.deepcopy(dict(config))
    for path in _RUN_SPECIFIC:
        node = trimmed
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    text = json.dumps(_without_none(trimmed), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _without_none(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _without_none(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_without_none(v) for v in node]
    return node


def tasks(config: Mapping[str, Any]) -> list[str]:
    """The tasks of the run: the keys of ``model.heads``."""
    return list(get_path(config, "model.heads"))


def sampler_for_tasks(config: Mapping[str, Any], keep: Sequence[str]) -> dict[str, Any] | None:
    """The config's ``data.sampler`` for a run of only the tasks ``keep``, when it must change: a
    `SpecifiedSampler`'s ``probabilities`` (one per task, by position) keep the entries of ``keep``,
    rescaled to sum to 1, so those tasks keep their relative shares. ``None`` for any other sampler
    (or a list of the wrong length, which the sampler reports itself)."""
    sampler = (config.get("data") or {}).get("sampler") or {}
    if not isinstance(sampler, Mapping) or not str(sampler.get("class_path", "")).endswith(
        "SpecifiedSampler"
    ):
        return None
    args = dict(sampler.get("init_args") or {})
    probabilities, names = args.get("probabilities"), tasks(config)
    if not isinstance(probabilities, list) or len(probabilities) != len(names):
        return None
    kept = [float(probabilities[names.index(t)]) for t in keep]
    if sum(kept) <= 0:
        raise ValueError(
            f"Expected the SpecifiedSampler to give the tasks {list(keep)} some probability, but its "
            f"probabilities for them are all 0 ({probabilities} for {names}). Give them a share or "
            "leave them out."
        )
    return {**sampler, "init_args": {**args, "probabilities": [p / sum(kept) for p in kept]}}


def _import(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def primary_metrics(config: Mapping[str, Any]) -> dict[str, str]:
    """``{task: primary metric}`` from each head class's ``primary_metric`` (e.g. ``accuracy``)."""
    out = {}
    for task, head in get_path(config, "model.heads").items():
        class_path = head["class_path"] if isinstance(head, Mapping) else head
        out[task] = str(_import(class_path).primary_metric)
    return out


def class_path_modules(config: Any) -> list[str]:
    """The modules of every ``class_path`` in the config (worth importing once before many runs)."""
    found: list[str] = []
    if isinstance(config, Mapping):
        path = config.get("class_path")
        if isinstance(path, str) and "." in path:
            found.append(path.rpartition(".")[0])
        for value in config.values():
            found += class_path_modules(value)
    elif isinstance(config, list):
        for value in config:
            found += class_path_modules(value)
    return list(dict.fromkeys(found))


def single_process(config: Mapping[str, Any]) -> bool:
    """Whether ``mtl fit`` runs this config in one process (one device, one node, no launcher of its own).

    Multi-device strategies re-launch the script from ``sys.argv``, which only a fresh interpreter
    (``SubprocessLauncher``) provides.
    """
    trainer = config.get("trainer", {})
    devices = trainer.get("devices", "auto")
    one_device = devices in (1, "1") or (isinstance(devices, list) and len(devices) == 1)
    return one_device and trainer.get("num_nodes", 1) in (1, "1")
