"""Planning a sweep: runs, order, baselines, and errors that name the axis before anything runs."""

import re
from pathlib import Path

import pytest
import yaml

from mtl.ablation.baselines import single_task_overlay
from mtl.ablation.config_parser import ConfigParser
from mtl.ablation.grid import Grid
from mtl.ablation.plan import SweepError, plan_sweep

WIDTH = {"key": "model.encoder.init_args.width", "values": [8, 16]}
LR = {"key": "model.optimizer.init_args.lr", "values": [0.01, 0.1]}


def grid(tmp_path: Path, **axes) -> Grid:
    return Grid.from_dict({"axes": axes}, tmp_path)


def test_runs_cover_configurations_and_baselines_seed_by_seed(
    tiny_config, tiny_parser, tmp_path: Path
) -> None:
    sweep = plan_sweep(
        [tiny_config], grid(tmp_path, width=WIDTH, lr=LR), [0, 1], tmp_path / "out", parser=tiny_parser
    )
    manifest = sweep.manifest
    assert manifest.tasks == ["cls", "reg"]
    assert [c.name for c in manifest.configurations] == [
        "width-8__lr-0.01",
        "width-8__lr-0.1",
        "width-16__lr-0.01",
        "width-16__lr-0.1",
    ]
    assert all(c.primary == {"cls": "accuracy", "reg": "mse"} for c in manifest.configurations)
    assert len(manifest.runs) == (4 + 2) * 2
    # Seed 0 of everything (baselines first), then seed 1.
    assert [r.seed for r in manifest.runs] == [0] * 6 + [1] * 6
    assert [r.task for r in manifest.runs[:2]] == ["cls", "reg"]
    run = manifest.runs[3]
    assert run.dir == "width-8__lr-0.1/seed0" and run.configuration == "width-8__lr-0.1"
    assert run.args == [
        "--model.encoder.init_args.width",
        "8",
        "--model.optimizer.init_args.lr",
        "0.1",
        "--seed_everything",
        "0",
    ]
    for task in ("cls", "reg"):
        baseline = manifest.baselines[task]
        assert re.fullmatch(rf"baselines/{task}-[0-9a-f]{{8}}", baseline.dir)
        assert baseline.metric == {"cls": "accuracy", "reg": "mse"}[task]
    # One fingerprint per configuration, shared by its seeds; different configurations differ.
    prints = {r.configuration or r.task: set() for r in manifest.runs}
    for r in manifest.runs:
        prints[r.configuration or r.task].add(r.fingerprint)
    assert all(len(p) == 1 for p in prints.values())
    assert len({next(iter(p)) for p in prints.values()}) == 6
    assert sweep.single_process and "tests.toy" in sweep.modules


def test_baselines_keep_one_head_and_are_shared_by_sweeps_on_the_same_base(
    tiny_config, tiny_parser, tmp_path
) -> None:
    first = plan_sweep([tiny_config], grid(tmp_path, width=WIDTH), [0], tmp_path / "out", parser=tiny_parser)
    second = plan_sweep([tiny_config], grid(tmp_path, lr=LR), [0], tmp_path / "out", parser=tiny_parser)
    assert first.manifest.baselines == second.manifest.baselines
    overlay_path, overlay = next(iter(first.overlays.items()))
    assert overlay_path.endswith("single_task.yaml")
    resolved = tiny_parser.resolve([str(tiny_config), yaml.safe_dump(overlay)])
    assert list(resolved["model"]["heads"]) == ["cls"]
    assert resolved["model"]["heads"]["cls"]["init_args"]["num_classes"] == 3
    assert resolved["data"]["source"]["init_args"]["tasks"] == ["cls"]
    assert resolved["data"]["source"]["init_args"]["n"] == 64  # the rest of the source is the base's
    # Another base config gets other baselines, not the stale ones.
    other = tmp_path / "other.yaml"
    other.write_text("model: {optimizer: {init_args: {lr: 0.5}}}\n")
    changed = plan_sweep(
        [tiny_config, other], grid(tmp_path, width=WIDTH), [0], tmp_path / "out", parser=tiny_parser
    )
    assert changed.manifest.baselines["cls"].dir != first.manifest.baselines["cls"].dir
    assert not plan_sweep(
        [tiny_config], grid(tmp_path, width=WIDTH), [0], tmp_path / "o", baselines=False, parser=tiny_parser
    ).manifest.baselines


def test_single_task_overlay_cuts_task_keyed_settings() -> None:
    base = {
        "model": {
            "heads": {"a": {"class_path": "H"}, "b": {"class_path": "H"}},
            "loss_weights": {"a": 2.0, "b": 1.0},
        },
        "data": {"source": {"class_path": "S", "init_args": {"tasks": ["a", "b"]}}},
    }
    assert single_task_overlay(base, "b") == {
        "model": {"heads": {"b": {"class_path": "H"}}, "loss_weights": {"b": 1.0}},
        "data": {"source": {"init_args": {"tasks": ["b"]}}},
    }
    with pytest.raises(ValueError, match="one of the base config's tasks"):
        single_task_overlay(base, "c")
    sampler = {
        "class_path": "mtl.data.samplers.SpecifiedSampler",
        "init_args": {"probabilities": [0.7, 0.3], "seed": 4},
    }
    base["data"]["sampler"] = sampler  # one probability per task, by position: the baseline's is [1.0]
    assert single_task_overlay(base, "a")["data"]["sampler"] == {
        "class_path": "mtl.data.samplers.SpecifiedSampler",
        "init_args": {"probabilities": [1.0], "seed": 4},
    }
    base["model"]["mean_over"] = ["a"]
    assert single_task_overlay(base, "b")["model"]["mean_over"] is None  # the baseline's own task
    base["data"]["source"]["init_args"]["tasks"] = 2
    with pytest.raises(ValueError, match="--no-baselines"):
        single_task_overlay(base, "a")


def test_a_key_that_matches_no_config_field_names_the_axis(tiny_config, tiny_parser, tmp_path) -> None:
    bad = {"key": "model.encoder.init_args.widht", "values": [8]}
    with pytest.raises(
        SweepError, match=r"key `model.encoder.init_args.widht` of grid axis `width`.*match a config field"
    ):
        plan_sweep([tiny_config], grid(tmp_path, lr=LR, width=bad), [0], tmp_path / "out", parser=tiny_parser)
    with pytest.raises(SweepError, match=r"grid axis `foo`.*no `model.foo`"):
        plan_sweep(
            [tiny_config],
            grid(tmp_path, foo={"key": "model.foo", "values": [1]}),
            [0],
            tmp_path,
            parser=tiny_parser,
        )


def test_a_value_of_the_wrong_type_names_the_axis_and_value(tiny_config, tiny_parser, tmp_path) -> None:
    bad = {"key": "model.encoder.init_args.width", "values": [8, "wide"]}
    with pytest.raises(SweepError, match=r"grid axis `width` \(choice `wide`.*valid values .*wide"):
        plan_sweep([tiny_config], grid(tmp_path, width=bad), [0], tmp_path / "out", parser=tiny_parser)


def test_keys_inside_an_overlay_axis_choice_resolve_after_the_overlay(
    tiny_config, tiny_parser, tmp_path
) -> None:
    (tmp_path / "mmoe.yaml").write_text(
        "model:\n  neck: {class_path: mtl.necks.MMoE, init_args: {num_experts: 2, expert_hidden: [8]}}\n"
    )
    experts = {"key": "model.neck.init_args.num_experts", "values": [2, 4]}
    sweep = plan_sweep(
        [tiny_config],
        grid(tmp_path, experts=experts, neck={"overlays": ["mmoe.yaml"]}),
        [0],
        tmp_path,
        parser=tiny_parser,
    )
    assert [c.name for c in sweep.manifest.configurations] == ["experts-2__neck-mmoe", "experts-4__neck-mmoe"]
    with pytest.raises(SweepError, match=r"axis `experts`.*no `model.neck.init_args`"):
        plan_sweep([tiny_config], grid(tmp_path, experts=experts), [0], tmp_path, parser=tiny_parser)


def test_an_overlay_that_does_not_parse_names_the_axis(tiny_config, tiny_parser, tmp_path) -> None:
    (tmp_path / "bad.yaml").write_text("model: {nope: 1}\n")
    with pytest.raises(SweepError, match=r"overlays .*bad.yaml.* of grid axis `variant` \(choice `bad`"):
        plan_sweep(
            [tiny_config],
            grid(tmp_path, variant={"overlays": ["bad.yaml"]}),
            [0],
            tmp_path,
            parser=tiny_parser,
        )


def test_base_configs_and_seeds_are_checked(tiny_config, tiny_parser, tmp_path) -> None:
    with pytest.raises(SweepError, match="at least one seed"):
        plan_sweep([tiny_config], grid(tmp_path, width=WIDTH), [], tmp_path, parser=tiny_parser)
    with pytest.raises(SweepError, match="existing files"):
        plan_sweep([tmp_path / "nope.yaml"], grid(tmp_path, width=WIDTH), [0], tmp_path, parser=tiny_parser)
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"model": {"heads": {}}, "nope": 1}))
    with pytest.raises(SweepError, match=r"Expected the base configs .* to parse"):
        plan_sweep([broken], grid(tmp_path, width=WIDTH), [0], tmp_path)


def test_a_source_without_named_tasks_has_no_baselines(tmp_path) -> None:
    config = {
        "model": {
            "encoder": {"class_path": "tests.toy.TinyEncoder"},
            "heads": {
                "t0": {"class_path": "mtl.heads.RegressionHead"},
                "t1": {"class_path": "mtl.heads.RegressionHead"},
            },
        },
        "data": {"source": {"class_path": "mtl.data.sources.MMoESynthetic", "init_args": {"tasks": 2}}},
    }
    path = tmp_path / "synthetic.yaml"
    path.write_text(yaml.safe_dump(config))
    parser = ConfigParser([str(path)])
    with pytest.raises(SweepError, match=r"select its tasks by name.*--no-baselines"):
        plan_sweep([path], grid(tmp_path, width=WIDTH), [0], tmp_path, parser=parser)
    assert (
        len(
            plan_sweep(
                [path], grid(tmp_path, width=WIDTH), [0], tmp_path, baselines=False, parser=parser
            ).manifest.runs
        )
        == 2
    )
