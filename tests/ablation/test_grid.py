"""Grid files: expansion (names, counts, order, overlays + keys) and clear errors for bad grids."""

from pathlib import Path

import pytest
import yaml

from mtl.ablation.grid import Grid, GridError, cli_value, load_grid


@pytest.fixture
def overlays(tmp_path: Path) -> Path:
    for name in ("small.yaml", "large.yaml", "extra.yaml"):
        (tmp_path / name).write_text("trainer: {max_epochs: 1}\n")
    return tmp_path


def test_product_of_overlay_and_key_axes_in_file_order(overlays: Path) -> None:
    spec = {
        "axes": {
            "size": {"overlays": {"s": "small.yaml", "l": ["large.yaml", "extra.yaml"]}},
            "pooling": {"key": "model.encoder.init_args.pooling", "values": ["cls", "mean", "max"]},
        }
    }
    combos = Grid.from_dict(spec, overlays).combos()
    assert len(combos) == 2 * 3
    assert [c.name for c in combos] == [
        "size-s__pooling-cls",
        "size-s__pooling-mean",
        "size-s__pooling-max",
        "size-l__pooling-cls",
        "size-l__pooling-mean",
        "size-l__pooling-max",
    ]
    large_max = combos[-1]
    assert large_max.settings == {"size": "l", "pooling": "max"}
    assert large_max.overlays == [str(overlays / "large.yaml"), str(overlays / "extra.yaml")]
    assert large_max.args == ["--model.encoder.init_args.pooling", "max"]


def test_a_key_axis_may_set_several_keys_to_one_named_value(tmp_path: Path) -> None:
    keys = ["model.heads.a.init_args.hidden", "model.heads.b.init_args.hidden"]
    spec = {"axes": {"head": {"key": keys, "values": {"linear": [], "mlp": [64, 32]}}}}
    linear, mlp = Grid.from_dict(spec, tmp_path).combos()
    assert (linear.name, mlp.name) == ("head-linear", "head-mlp")
    assert mlp.args == [f"--{keys[0]}", "[64, 32]", f"--{keys[1]}", "[64, 32]"]
    assert linear.args[1] == "[]"


def test_values_get_short_names_and_command_line_text(tmp_path: Path) -> None:
    values = [
        1.0e-3,
        True,
        None,
        [256, 64],
        [],
        {"class_path": "mtl.necks.MMoE", "init_args": {"num_experts": 4}},
    ]
    spec = {"axes": {"x": {"key": "model.neck", "values": values}}}
    combos = Grid.from_dict(spec, tmp_path).combos()
    assert [c.settings["x"] for c in combos] == ["0.001", "true", "null", "256x64", "empty", "MMoE"]
    # Strings go as they are (jsonargparse would keep JSON quotes), everything else as JSON.
    assert cli_value("mean") == "mean"
    assert cli_value(None) == "null" and cli_value(False) == "false" and cli_value([1, 2]) == "[1, 2]"
    assert cli_value({"class_path": "a.B"}) == '{"class_path": "a.B"}'


def test_load_grid_resolves_overlays_from_the_grid_folder(overlays: Path) -> None:
    path = overlays / "grid.yaml"
    path.write_text(yaml.safe_dump({"axes": {"size": {"overlays": ["small.yaml", "large.yaml"]}}}))
    grid = load_grid(path)
    assert [c.name for c in grid.combos()] == ["size-small", "size-large"]
    assert grid.to_dict()["axes"]["size"]["choices"]["small"] == {"overlays": [str(overlays / "small.yaml")]}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (None, "at least one axis"),
        ({"axes": {}}, "at least one axis"),
        ({"axis": {"a": {}}}, "only the key `axes`"),
        (
            {"axes": {"lr": {"key": "model.optimizer.init_args.lr", "values": []}}},
            "axis `lr`.*at least one value",
        ),
        ({"axes": {"lr": {"key": "model.optimizer.init_args.lr"}}}, "axis `lr`.*both `key` and `values`"),
        ({"axes": {"lr": {"values": [1]}}}, "axis `lr`.*both `key` and `values`"),
        ({"axes": {"size": {"overlays": {}}}}, "axis `size`.*at least one value"),
        (
            {"axes": {"size": {"overlays": ["nope.yaml"]}}},
            "overlay `nope.yaml` of choice `nope` of grid axis `size`",
        ),
        ({"axes": {"lr": {"key": "--model.lr", "values": [1]}}}, "no leading dashes"),
        ({"axes": {"s": {"key": "seed_everything", "values": [1]}}}, "use `--seeds`"),
        ({"axes": {"s": {"key": "trainer.logger", "values": [False]}}}, "its own folder"),
        ({"axes": {"x": {"key": "a.b", "values": [1, "1"]}}}, "distinct names"),
        ({"axes": {"x": {"key": "a.b", "values": [{"k": 1}]}}}, "short name"),
        ({"axes": {"x": {"key": "a.b", "values": {"bad/name": 1}}}}, "folder names"),
        (
            {"axes": {"x": {"key": "a.b", "values": [1]}, "y": {"key": "a.b", "values": [2]}}},
            "axes `x` and `y`",
        ),
        ({"axes": {"x": {"key": "a.b", "values": [1], "overlays": ["a.yaml"]}}}, "it has both"),
        ({"axes": {"x-y": {"key": "a.b", "values": [1]}}}, "identifier"),
        ({"axes": {"x": {"key": "a.b", "value": [1]}}}, "got also \\['value'\\]"),
    ],
)
def test_bad_grids_fail_naming_the_axis(spec, message: str, tmp_path: Path) -> None:
    with pytest.raises(GridError, match=message):
        Grid.from_dict(spec, tmp_path)


def test_missing_grid_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GridError, match="Expected `--grid` to be a YAML file"):
        load_grid(tmp_path / "nope.yaml")
