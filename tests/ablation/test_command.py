"""`mtl ablate` options: dry run, bad grids, cluster scripts, and `--index` picking one run of the plan."""

from pathlib import Path

import pytest
import yaml

from mtl.ablation import command
from mtl.ablation.manifest import Manifest
from mtl.runs import SubprocessLauncher


def write_grid(folder: Path, axes) -> Path:
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump({"axes": axes}))
    return path


WIDTH = {"width": {"key": "model.encoder.init_args.width", "values": [4, 16]}}


def test_dry_run_lists_the_runs_and_writes_nothing(tiny_config: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    command.main(
        [
            "--config",
            str(tiny_config),
            "--grid",
            str(write_grid(tmp_path, WIDTH)),
            "--seeds",
            "2",
            "--out",
            str(out),
            "--dry-run",
        ]
    )
    printed = capsys.readouterr().out
    assert "2 configurations x 2 seeds + 2 single-task baselines x 2 seeds = 8 runs" in printed
    assert (
        "[7] width-16/seed1: mtl fit --config" in printed and "--model.encoder.init_args.width 16" in printed
    )
    assert not out.exists()


def test_bad_grids_stop_before_anything_runs(tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="at least one axis"):
        command.main(
            ["--config", str(tiny_config), "--grid", str(write_grid(tmp_path, {})), "--out", str(out)]
        )
    bad = {"width": {"key": "model.encoder.init_args.wdth", "values": [4]}}
    with pytest.raises(
        SystemExit, match=r"key `model.encoder.init_args.wdth` of grid axis `width`.*match a config field"
    ):
        command.main(
            ["--config", str(tiny_config), "--grid", str(write_grid(tmp_path, bad)), "--out", str(out)]
        )
    assert not out.exists()


def test_seeds_and_jobs_are_checked(capsys) -> None:
    for bad in (["--seeds", "0"], ["--seeds", "1,1"], ["--seeds", "x"], ["--jobs", "0"]):
        with pytest.raises(SystemExit):
            command.build_parser().parse_args(["--config", "c.yaml", "--grid", "g.yaml", *bad])
    assert "Expected --seeds to be a count >= 1" in capsys.readouterr().err
    parse = command.build_parser().parse_args
    assert parse(["--config", "c", "--grid", "g", "--seeds", "3,7"]).seeds == [3, 7]
    assert parse(["--config", "c", "--grid", "g", "--seeds", "5,"]).seeds == [5]
    assert parse(["--config", "c", "--grid", "g", "--seeds", "2"]).seeds == [0, 1]


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2], [5], [1, 5, 7]])
def test_cluster_scripts_repeat_the_same_sweep(seeds: list[int]) -> None:
    args = command.build_parser().parse_args(["--config", "c.yaml", "--grid", "g.yaml", "--no-baselines"])
    args.seeds = seeds
    words = command._rerun_command(args, Path("/out"), "proj")
    assert words[1:4] == ["-m", "mtl.cli", "ablate"]
    again = command.build_parser().parse_args(words[4:])
    assert (again.seeds, again.baselines, again.wandb, again.out) == (seeds, False, "proj", "/out")
    assert again.config == [str(Path("c.yaml").resolve())]


def test_emit_slurm_writes_the_plan_and_the_script_only(tiny_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    grid = write_grid(tmp_path, WIDTH)
    command.main(
        [
            "--config",
            str(tiny_config),
            "--grid",
            str(grid),
            "--out",
            str(out),
            "--emit",
            "slurm",
            "--jobs",
            "2",
        ]
    )
    script = (out / "ablate.sbatch").read_text()
    assert "#SBATCH --array=0-3%2" in script  # 2 configurations + 2 baselines, one seed
    assert f"--grid {grid}" in script and '--index "$SLURM_ARRAY_TASK_ID"' in script
    assert len(Manifest.read(out).runs) == 4
    assert sorted(p.name for p in out.iterdir()) == ["ablate.sbatch", "baselines", "sweep.json"]
    command.main(["--config", str(tiny_config), "--grid", str(grid), "--out", str(out), "--emit", "wandb"])
    assert yaml.safe_load((out / "wandb_sweep.yaml").read_text())["parameters"]["index"]["values"] == [
        0,
        1,
        2,
        3,
    ]


def test_index_runs_exactly_that_run_of_the_plan(tiny_config: Path, tmp_path: Path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(command, "run_sweep", lambda out, runs, **kw: calls.append((runs, kw)) or [])
    args = [
        "--config",
        str(tiny_config),
        "--grid",
        str(write_grid(tmp_path, WIDTH)),
        "--out",
        str(tmp_path / "o"),
    ]
    command.main([*args, "--index", "3"])
    ((runs, kwargs),) = calls
    assert [r.dir for r in runs] == ["width-16/seed0"]
    assert isinstance(kwargs["launcher"], SubprocessLauncher)  # one run: no server to start
    with pytest.raises(SystemExit, match=r"--index in \[0, 4\)"):
        command.main([*args, "--index", "4"])


def test_mtl_dispatches_ablate_and_report(capsys) -> None:
    from mtl.cli import main

    for name in ("ablate", "report"):
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: mtl {name}" in capsys.readouterr().out
