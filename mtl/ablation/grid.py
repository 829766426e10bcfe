"""An ablation grid: named axes, each a set of named choices; their product is the set of configurations.

A grid file (YAML) names its axes under ``axes``; an axis either applies config overlays or sets dotted
config keys to values::

    axes:
      head:                                   # overlay axis: choice name -> overlay file(s)
        overlays: {linear: heads_linear.yaml, mlp: [heads_mlp.yaml, wider.yaml]}
      pooling:                                # key axis: a dotted config key and its values
        key: model.encoder.init_args.pooling
        values: [cls, mean, max]
      width:                                  # several keys set to the same value; named values
        key: [model.heads.a.init_args.hidden, model.heads.b.init_args.hidden]
        values: {linear: [], mlp64: [64]}

Every combination is one configuration, named ``head-mlp__pooling-mean`` (axes in file order). Overlay
paths are relative to the grid file's folder. Overlays are extra ``--config`` files (applied after the
base configs, in axis order) and key choices become ``--key value`` flags after them, which is how
``mtl fit`` combines them: a flag changes one field and keeps its siblings, whereas an overlay that
sets a mapping such as ``model.heads`` replaces the whole mapping (jsonargparse's rule for dict-typed
fields), so a heads overlay lists every head. Values without a natural short name (mappings without
``class_path``, nested lists) must be named.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Axis", "Choice", "Combo", "Grid", "GridError", "Part", "cli_value", "load_grid"]

_AXIS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9_.+-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
#: Keys the sweep itself sets for every run (its seed, directory, loggers and results file).
RESERVED_KEYS = {
    "seed_everything": "the sweep sets each run's seed: use `--seeds`",
    "trainer.default_root_dir": "each run writes into its own folder of the sweep",
    "trainer.logger": "each run logs into its own folder of the sweep (add `--wandb` for W&B)",
    "test_after_fit": "every run is tested after fitting",
    "results_file": "every run writes its results.json into its folder",
    "ckpt_path": "interrupted runs resume from their own checkpoints",
    "config": "overlay axes add config files",
}


class GridError(ValueError):
    """A grid file that cannot describe a sweep; the message names the axis and how to fix it."""


def cli_value(value: Any) -> str:
    """``value`` as a command-line value of ``mtl fit``: strings as they are (jsonargparse would keep
    quotes as part of a string), everything else as JSON, which jsonargparse reads as YAML."""
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class Choice:
    """One value of an axis: overlay files (absolute paths) or the value its keys are set to."""

    name: str
    value: Any = None
    overlays: tuple[str, ...] = ()


@dataclass(frozen=True)
class Axis:
    """A named axis: overlay choices (``keys`` empty) or values of one or more dotted keys."""

    name: str
    keys: tuple[str, ...]
    choices: tuple[Choice, ...]

    def part(self, choice: Choice) -> Part:
        """The command-line pieces that apply ``choice``."""
        args = tuple(item for key in self.keys for item in (f"--{key}", cli_value(choice.value)))
        return Part(self.name, choice.name, choice.overlays, args)


@dataclass(frozen=True)
class Part:
    """What one axis adds to a run's command: ``--config`` overlays and ``--key value`` flags."""

    axis: str
    choice: str
    overlays: tuple[str, ...]
    args: tuple[str, ...]


@dataclass(frozen=True)
class Combo:
    """One configuration of the grid: a choice per axis."""

    name: str
    parts: tuple[Part, ...]

    @property
    def settings(self) -> dict[str, str]:
        """``{axis: choice name}``."""
        return {part.axis: part.choice for part in self.parts}

    @property
    def overlays(self) -> list[str]:
        """The overlay files, in axis order (they follow the base configs)."""
        return [path for part in self.parts for path in part.overlays]

    @property
    def args(self) -> list[str]:
        """The ``--key value`` flags, in axis order (they follow every config file)."""
        return [item for part in self.parts for item in part.args]


@dataclass(frozen=True)
class Grid:
    """The axes of a sweep; `combos` is their product."""

    axes: tuple[Axis, ...]
    source: str = "<grid>"

    def combos(self) -> list[Combo]:
        """Every combination of one choice per axis, the first axis varying slowest."""
        out = []
        for choices in itertools.product(*(axis.choices for axis in self.axes)):
            parts = tuple(axis.part(choice) for axis, choice in zip(self.axes, choices, strict=True))
            out.append(Combo("__".join(f"{p.axis}-{p.choice}" for p in parts), parts))
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (for the sweep manifest)."""
        return {
            "source": self.source,
            "axes": {
                axis.name: {
                    "keys": list(axis.keys),
                    "choices": {
                        c.name: ({"overlays": list(c.overlays)} if not axis.keys else {"value": c.value})
                        for c in axis.choices
                    },
                }
                for axis in self.axes
            },
        }

    @classmethod
    def from_dict(cls, spec: Any, root: str | Path = ".", source: str = "<grid>") -> Grid:
        """Build and check a grid from its parsed YAML; overlay paths are relative to ``root``."""
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise GridError(f"Expected the grid {source} to be a mapping with `axes`, but got {spec!r}.")
        unknown = sorted(set(spec) - {"axes"})
        if unknown:
            raise GridError(
                f"Expected the grid {source} to have only the key `axes`, but got also {unknown}."
            )
        axes = spec.get("axes") or {}
        if not isinstance(axes, Mapping) or not axes:
            raise GridError(
                f"Expected the grid {source} to name at least one axis under `axes`, but got {axes!r}. "
                "Add e.g. `axes: {pooling: {key: model.encoder.init_args.pooling, values: [cls, mean]}}`."
            )
        built = tuple(_axis(str(name), body, Path(root), source) for name, body in axes.items())
        seen: dict[str, str] = {}
        for axis in built:
            for key in axis.keys:
                if key in seen:
                    raise GridError(
                        f"Expected every key to belong to one axis, but `{key}` is set by axes `{seen[key]}` "
                        f"and `{axis.name}` in {source}. Merge them into one axis."
                    )
                seen[key] = axis.name
        return cls(built, source)


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"Expected `--grid` to be a YAML file, but {path} does not exist.")
    return Grid.from_dict(yaml.safe_load(path.read_text()), path.parent, str(path))


def _axis(name: str, body: Any, root: Path, source: str) -> Axis:
    where = f"grid axis `{name}` in {source}"
    if not _AXIS.match(name):
        raise GridError(
            f"Expected the name of {where} to be an identifier (letters, digits, _), but got {name!r}."
        )
    if not isinstance(body, Mapping):
        raise GridError(
            f"Expected {where} to be a mapping with `overlays`, or `key` and `values`, but got {body!r}."
        )
    unknown = sorted(set(body) - {"overlays", "key", "values"})
    if unknown:
        raise GridError(
            f"Expected {where} to have only `overlays`, or `key` and `values`, but got also {unknown}."
        )
    if "overlays" in body:
        if "key" in body or "values" in body:
            raise GridError(
                f"Expected {where} to have either `overlays` or `key` and `values`, but it has both."
            )
        choices = _named(body["overlays"], where, "overlays")
        return Axis(name, (), tuple(Choice(n, overlays=_overlays(v, root, where, n)) for n, v in choices))
    if "key" not in body or "values" not in body:
        raise GridError(
            f"Expected {where} to have `overlays`, or both `key` and `values`, but got {sorted(body)}. "
            "Example: `{key: model.optimizer.init_args.lr, values: [1.0e-4, 1.0e-3]}`."
        )
    keys = (body["key"],) if isinstance(body["key"], str) else tuple(body["key"] or ())
    if not keys:
        raise GridError(
            f"Expected `key` of {where} to be a dotted config key or a list of them, but got none."
        )
    for key in keys:
        if not isinstance(key, str) or not _KEY.match(key):
            raise GridError(
                f"Expected `key` of {where} to be a dotted config key such as `model.optimizer.init_args.lr` "
                f"(no leading dashes), but got {key!r}."
            )
        reserved = next((r for r in RESERVED_KEYS if key == r or key.startswith(r + ".")), None)
        if reserved:
            raise GridError(
                f"Expected `key` of {where} to be a key the sweep does not set itself, but got `{key}`: "
                f"{RESERVED_KEYS[reserved]}."
            )
    return Axis(name, keys, tuple(Choice(n, value=v) for n, v in _named(body["values"], where, "values")))


def _named(values: Any, where: str, field: str) -> list[tuple[str, Any]]:
    """``[(name, value)]`` from a list (names derived) or a mapping (names given)."""
    if isinstance(values, Mapping):
        pairs = [(str(k), v) for k, v in values.items()]
        for name, _ in pairs:
            if not _NAME.match(name):
                raise GridError(
                    f"Expected the choice names of {where} to use letters, digits and `_ . + -` (not first), "
                    f"but got {name!r}: they become folder names."
                )
    elif isinstance(values, Sequence) and not isinstance(values, str):
        pairs = [(_auto_name(v, where, field), v) for v in values]
    else:
        raise GridError(
            f"Expected `{field}` of {where} to be a list or a mapping of named values, but got {values!r}."
        )
    if not pairs:
        raise GridError(f"Expected `{field}` of {where} to hold at least one value, but it is empty.")
    names = [n for n, _ in pairs]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise GridError(
            f"Expected the choices of {where} to have distinct names, but {clashes} occur more than once. "
            f"Name them: `{field}: {{name_a: ..., name_b: ...}}`."
        )
    return pairs


def _auto_name(value: Any, where: str, field: str) -> str:
    if field == "overlays":
        paths = [value] if isinstance(value, str) else value
        if isinstance(paths, Sequence) and paths and all(isinstance(p, str) for p in paths):
            return _safe("+".join(Path(p).stem for p in paths))
    elif value is None or isinstance(value, bool | int | float | str):
        return _safe(json.dumps(value) if value is None or isinstance(value, bool) else str(value))
    elif isinstance(value, Sequence) and all(isinstance(v, int | float | str) for v in value):
        return _safe("x".join(str(v) for v in value) or "empty")
    elif isinstance(value, Mapping) and isinstance(value.get("class_path"), str):
        return _safe(value["class_path"].rsplit(".", 1)[-1])
    raise GridError(
        f"Expected every value in `{field}` of {where} to have a short name, but {value!r} has none. "
        f"Name the values: `{field}: {{name: value, ...}}`."
    )


def _safe(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_.+-]", "_", text)
    return text if _NAME.match(text) else f"v{text}"


def _overlays(value: Any, root: Path, where: str, name: str) -> tuple[str, ...]:
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, Sequence) or not paths or not all(isinstance(p, str) for p in paths):
        raise GridError(
            f"Expected choice `{name}` of {where} to be an overlay file or a list of them, but got {value!r}."
        )
    resolved = []
    for path in paths:
        full = (root / path).resolve()
        if not full.is_file():
            raise GridError(
                f"Expected overlay `{path}` of choice `{name}` of {where} to be a file, but {full} does not "
                f"exist (overlay paths are relative to the grid file's folder, {root})."
            )
        resolved.append(str(full))
    return tuple(resolved)
