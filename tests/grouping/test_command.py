"""`mtl group` end to end on a tiny three-task config: affinity, groups, configs, the --train table, errors."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtl.cli import main as mtl_main
from mtl.grouping.affinity import load_affinity
from mtl.grouping.command import main
from mtl.grouping.configs import resolve_config
from mtl.grouping.hoa import MissingPairwiseRuns, hoa_scores, read_pairwise_results
from mtl.grouping.scores import PairwiseScores
from mtl.grouping.selection import select_groups
from mtl.grouping.training import run_name, task_metrics, weighted_run_name
from tests.test_cli import TINY

TASKS = ["cls", "reg", "bin"]


def tiny3(path: Path, **trainer: object) -> Path:
    """`TINY` with a third task (`bin`) and ``trainer`` settings; the affinity run switches the layout to
    `all_tasks` itself."""
    tiny = yaml.safe_load(yaml.safe_dump(TINY))
    tiny["model"]["heads"]["bin"] = {"class_path": "mtl.heads.BinaryHead"}
    tiny["data"]["source"]["init_args"]["tasks"] = TASKS
    tiny["trainer"].update(trainer)
    path.write_text(yaml.safe_dump(tiny, sort_keys=False))
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tiny3(tmp_path / "tiny3.yaml")


def check_groups(out: Path, budget: int, max_epochs: int = TINY["trainer"]["max_epochs"]) -> dict:
    groups = json.loads((out / "groups.json").read_text())
    assert groups["tasks"] == TASKS and 1 <= len(groups["groups"]) <= budget
    for task, name in groups["serving"].items():
        group = next(g for g in groups["groups"] if g["name"] == name)
        assert task in group["tasks"] and task in group["serves"]
    for group in groups["groups"]:  # each config trains exactly its group's tasks
        resolved = resolve_config([out / group["config"]])
        assert list(resolved["model"]["heads"]) == group["tasks"]
        assert resolved["data"]["source"]["init_args"]["tasks"] == group["tasks"]
        assert resolved["trainer"]["max_epochs"] == max_epochs  # the rest is the base
    return groups


@pytest.mark.parametrize("method", ["tag", "cosine"])
def test_affinity_methods_end_to_end(
    method: str, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    if method == "tag":
        main(["--config", str(config), "--method", method, "--budget", "2", "--out", str(out), "--no-wandb"])
    else:  # through `mtl group`, with the heatmap on the dashboard too
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: the W&B run goes offline
        mtl_main(["group", "--config", str(config), "--method", method, "--budget", "2", "--out", str(out)])
        wandb = out / "affinity_run" / "wandb"
        images = [p.name for p in wandb.glob("offline-run-*/files/media/images/grouping/cosine/*.png")]
        over_training = [n for n in images if n.startswith("affinity_over_training_")]
        assert len(images) == 2 and len(over_training) == 1  # the matrix and its course over training
    names, matrix = load_affinity(out / "affinity.csv")
    assert names == TASKS and (out / "affinity.png").stat().st_size > 0
    groups = check_groups(out, 2)
    # The groups are TAG's selection on the written matrix.
    again = select_groups(PairwiseScores(names, matrix), 2)
    assert [g["tasks"] for g in groups["groups"]] == [list(g) for g in again.groups]
    assert groups["score"] == pytest.approx(again.score)
    assert [p.name for p in (out / "affinity_run" / "csv").iterdir()] == ["version_0"]
    # Another budget on the same measurement selects again without training again.
    main(["--config", str(config), "--method", method, "--budget", "1", "--out", str(out), "--no-wandb"])
    assert [p.name for p in (out / "affinity_run" / "csv").iterdir()] == ["version_0"]
    assert json.loads((out / "groups.json").read_text())["groups"][0]["tasks"] == TASKS
    if method == "cosine":  # the same file with other contents is another measurement
        tiny3(config, max_epochs=1)
        main(["--config", str(config), "--method", method, "--budget", "1", "--out", str(out), "--no-wandb"])
        assert sorted(p.name for p in (out / "affinity_run" / "csv").iterdir()) == ["version_0", "version_1"]


def test_datamap_groups_are_the_clusters_of_the_memberships(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(["--config", str(config), "--method", "datamap", "--budget", "2", "--out", str(out), "--no-wandb"])
    groups = check_groups(out, 2)
    memberships = groups["memberships"]
    assert set(memberships) == set(TASKS)
    for task, row in memberships.items():
        assert sum(row) == pytest.approx(1.0) and len(row) == 2
        assert task in groups["groups"][0 if row[0] >= row[1] else 1]["tasks"]
    assert groups["disjoint"] and (out / "datamap.pt").is_file()
    # The data maps are read back from datamap.pt to cluster again, without training again.
    main(["--config", str(config), "--method", "datamap", "--budget", "3", "--out", str(out), "--no-wandb"])
    assert [p.name for p in (out / "affinity_run" / "csv").iterdir()] == ["version_0"]
    again = json.loads((out / "groups.json").read_text())
    assert len(again["memberships"]["cls"]) == 3 and len(again["groups"]) == 3


def test_datamap_membership_weights_train_every_task_in_each_cluster(tmp_path: Path) -> None:
    """STG-MTL's soft groups: each cluster's model trains every task, weighted by its membership in the
    cluster, and serves the tasks of its cluster; the table reads each task from its serving run."""
    config = tiny3(tmp_path / "tiny3.yaml", max_epochs=1)
    out = tmp_path / "out"
    argv = ["--config", str(config), "--method", "datamap", "--budget", "2", "--out", str(out)]
    main([*argv, "--membership-weights", "--train", "--no-wandb"])
    groups = json.loads((out / "groups.json").read_text())
    assert groups["membership_weights"] is True
    memberships = groups["memberships"]
    rows = {r["task"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    for group in groups["groups"]:
        column = int(np.argmax(memberships[group["tasks"][0]]))
        expected = {t: memberships[t][column] for t in TASKS}
        assert group["loss_weights"] == pytest.approx(expected)
        resolved = resolve_config([out / group["config"]])  # every task, weighted
        assert list(resolved["model"]["heads"]) == TASKS
        assert resolved["model"]["loss_weights"] == pytest.approx(expected)
        assert resolved["model"]["mean_over"] == group["serves"]  # its checkpoint follows what it serves
        name = weighted_run_name(expected, group["serves"])
        run = json.loads((out / "runs" / name / "seed0" / "results.json").read_text())
        for task in group["serves"]:
            assert groups["serving"][task] == group["name"] and rows[task]["group"] == group["name"]
            values, _ = task_metrics(run, task)
            assert float(rows[task]["its group"]) == pytest.approx(values[rows[task]["metric"]])
    with pytest.raises(ValueError, match=r"Expected `--membership-weights` only with --method datamap"):
        main([*argv[:3], "tag", *argv[4:], "--membership-weights", "--no-wandb"])


# --------------------------------------------------------------------------------------- hoa and --train
# Hand-made results (gains over single-task in %): with cls, reg gains 20 and cls 20; with bin, cls
# and bin lose 10; with reg, bin gains 10 and reg loses 10. HOA, 2 overlapping networks: {cls, reg}
# serves cls and reg (+20 each), {reg, bin} serves bin (+10).
METRIC = {"cls": ("accuracy", True), "reg": ("mse", False), "bin": ("auroc", True)}
SINGLE = {"cls": 0.5, "reg": 1.0, "bin": 0.6}
PAIRS = {("cls", "reg"): (0.6, 0.8), ("cls", "bin"): (0.45, 0.54), ("reg", "bin"): (1.1, 0.66)}
TRAINED = {"cls+reg+bin": {"cls": 0.55, "reg": 0.9, "bin": 0.63}}


def write_results(runs: Path, name: str, values: dict[str, float]) -> None:
    """A finished run: its validation metrics (HOA's choice) and test metrics (the table) both ``values``."""
    path = runs / name / "seed0"
    path.mkdir(parents=True)
    metrics = {f"{s}/{t}/{METRIC[t][0]}": v for s in ("val", "test") for t, v in values.items()}
    directions = {f"{s}/{t}/{METRIC[t][0]}": METRIC[t][1] for s in ("val", "test") for t in values}
    metrics["test/mean"], directions["test/mean"] = 0.0, True
    (path / "results.json").write_text(json.dumps({"metrics": metrics, "higher_is_better": directions}))


def write_pairwise(runs: Path) -> None:
    for task, value in SINGLE.items():
        write_results(runs, run_name([task]), {task: value})
    for (a, b), (va, vb) in PAIRS.items():
        write_results(runs, run_name([a, b]), {a: va, b: vb})


def test_hoa_reads_the_pairwise_runs_and_selects(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: the W&B run goes offline
    pairwise = tmp_path / "pairwise"
    write_pairwise(pairwise)
    out = tmp_path / "out"
    main(
        [
            "--config",
            str(config),
            "--method",
            "hoa",
            "--budget",
            "2",
            "--out",
            str(out),
            "--pairwise",
            str(pairwise),
        ]
    )
    groups = check_groups(out, 2)
    assert [g["tasks"] for g in groups["groups"]] == [["cls", "reg"], ["reg", "bin"]]
    assert groups["serving"] == {"cls": "group_1", "reg": "group_1", "bin": "group_2"}
    assert groups["score"] == pytest.approx(20.0 + 20.0 + 10.0)
    names, matrix = load_affinity(out / "affinity.csv")
    assert names == TASKS
    np.testing.assert_allclose(matrix.numpy(), [[0, 20, -10], [20, 0, 10], [-10, -10, 0]], atol=1e-9)
    # The heatmap is also on the dashboard: a W&B run of its own (offline here).
    images = list((out / "wandb").glob("offline-run-*/files/media/images/grouping/hoa/*.png"))
    assert len(images) == 1 and (out / "affinity.png").stat().st_size > 0


def test_train_reports_each_task_together_grouped_and_alone(config: Path, tmp_path: Path, capsys) -> None:
    """Finished runs are never trained again, so hand-made results stand in for trained ones. The groups
    {cls, reg} and {reg, bin} are HOA's pair runs; the all-together run is `cls+reg+bin`."""
    out = tmp_path / "out"
    write_pairwise(out / "runs")
    for name, values in TRAINED.items():
        write_results(out / "runs", name, values)
    main(
        [
            "--config",
            str(config),
            "--method",
            "hoa",
            "--budget",
            "2",
            "--out",
            str(out),
            "--train",
            "--no-wandb",
        ]
    )
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    by_task = {r["task"]: r for r in rows}
    assert [r["task"] for r in rows] == [*TASKS, "Δm"]
    assert by_task["cls"]["group"] == "group_1" and by_task["bin"]["group"] == "group_2"
    assert float(by_task["reg"]["its group"]) == 0.8 and float(by_task["reg"]["single task"]) == 1.0
    # cls: together (0.55 - 0.5) / 0.5, with reg (0.6 - 0.5) / 0.5; reg (mse): -(0.9 - 1) / 1, -(0.8 - 1);
    # bin: (0.63 - 0.6) / 0.6, with reg (0.66 - 0.6) / 0.6.
    expected = {"cls": (10.0, 20.0), "reg": (10.0, 20.0), "bin": (5.0, 10.0)}
    for task, (together, grouped) in expected.items():
        assert float(by_task[task]["Δ% all"]) == pytest.approx(together)
        assert float(by_task[task]["Δ% group"]) == pytest.approx(grouped)
    assert float(by_task["Δm"]["Δ% all"]) == pytest.approx(25.0 / 3)
    assert float(by_task["Δm"]["Δ% group"]) == pytest.approx(50.0 / 3)
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(
        ["bin", "cls", "reg", "cls+bin", "cls+reg", "reg+bin", "cls+reg+bin"]
    )  # nothing else was trained
    assert "| cls | accuracy | group_1 |" in (out / "comparison.md").read_text()
    assert "Δ% group" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (
            ["--method", "tag", "--budget", "0"],
            ValueError,
            r"Expected `budget` to be a number of networks >= 1",
        ),
        (
            ["--method", "tag", "--budget", "8"],
            ValueError,
            r"at most the number of candidate groups \(7 for 3",
        ),
        (
            ["--method", "tag", "--budget", "4", "--disjoint"],
            ValueError,
            r"at most the number of tasks \(3\)",
        ),
        (["--method", "datamap", "--budget", "4"], ValueError, r"at most the number of tasks \(3\)"),
        (
            ["--method", "hoa", "--budget", "2"],
            MissingPairwiseRuns,
            r"6 are missing: cls/seed0.*--train",
        ),
        (
            ["--method", "datamap", "--budget", "2", "--search", "beam"],
            ValueError,
            r"Expected no `--search` or `--disjoint` with --method datamap",
        ),
        (["--method", "tag", "--budget", "2", "--seeds", "0"], ValueError, r"Expected `--seeds` to be >= 1"),
        (
            ["--method", "datamap", "--budget", "2", "--every-n-steps", "2"],
            ValueError,
            r"only with --method tag or",
        ),
    ],
)
def test_bad_input_fails_before_training(
    config: Path, tmp_path: Path, args: list[str], error: type, match: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        main(["--config", str(config), "--out", str(out), "--no-wandb", *args])
    assert not (out / "affinity_run").exists()


def test_a_source_that_cannot_select_tasks_writes_no_configs_and_refuses_train(tmp_path: Path) -> None:
    synthetic = Path("configs/examples/mmoe_synthetic.yaml")
    with pytest.raises(ValueError, match=r"select its tasks by name.*`tasks: 2`"):
        main(
            [
                "--config",
                str(synthetic),
                "--method",
                "tag",
                "--budget",
                "1",
                "--out",
                str(tmp_path),
                "--train",
            ]
        )


def test_an_unknown_method_is_refused_with_the_choices(config: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--config", str(config), "--method", "spectral", "--budget", "2"])
    error = capsys.readouterr().err
    assert "argument --method: invalid choice: 'spectral'" in error
    assert re.search(r"choose from '?tag'?, '?cosine'?, '?datamap'?, '?hoa'?\)", error)


def commands(run: Path) -> list[str]:
    return [line for line in (run / "log.txt").read_text().splitlines() if line.startswith("$ ")]


def relative_change(value: float, base: float, higher_is_better: bool) -> float:
    return (1.0 if higher_is_better else -1.0) * (value - base) / abs(base)


def test_hoa_trains_tiny_pairwise_runs_then_the_groups_and_compares(tmp_path: Path) -> None:
    """Every task alone and every pair really trained (one epoch each), HOA's groups chosen on them, the
    all-together run added, and the table read from the runs' own results. A second call trains nothing,
    and a changed base config under the same --out stops instead of mixing two experiments."""
    config = tiny3(tmp_path / "tiny3.yaml", max_epochs=1)
    out = tmp_path / "out"
    argv = [
        "--config",
        str(config),
        "--method",
        "hoa",
        "--budget",
        "2",
        "--out",
        str(out),
        "--train",
        "--no-wandb",
    ]
    main(argv)
    runs = out / "runs"
    assert sorted(p.name for p in runs.iterdir()) == sorted(
        ["bin", "cls", "reg", "cls+bin", "cls+reg", "reg+bin", "cls+reg+bin"]
    )
    for run in runs.iterdir():
        (command,) = commands(run / "seed0")  # trained once, with its own restricted config
        assert f"configs/{run.name}.yaml" in command and "--seed_everything 0" in command

    # The matrix and the groups are HOA's on the trained runs.
    results = read_pairwise_results(runs, TASKS)
    names, matrix = load_affinity(out / "affinity.csv")
    assert names == TASKS
    np.testing.assert_allclose(matrix.numpy(), hoa_scores(results).matrix, atol=1e-9)
    groups = check_groups(out, 2, max_epochs=1)
    expected = select_groups(hoa_scores(results), 2)
    assert [tuple(g["tasks"]) for g in groups["groups"]] == list(expected.groups)
    for group in groups["groups"]:  # the group's config is the one its run trained
        body = (out / group["config"]).read_text().split("\n", 2)[2]
        assert (out / "configs" / f"{run_name(group['tasks'])}.yaml").read_text().split("\n", 1)[1] == body

    # The table, recomputed from the results.json of the runs.
    def metrics(name: str, task: str) -> tuple[dict[str, float], dict[str, bool]]:
        saved = json.loads((runs / name / "seed0" / "results.json").read_text())
        prefix = f"test/{task}/"
        keys = [k for k in saved["metrics"] if k.startswith(prefix) and k != prefix + "loss"]
        return {k: saved["metrics"][k] for k in keys}, {k: saved["higher_is_better"][k] for k in keys}

    rows = {r["task"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    gains = {"all": [], "group": []}
    for task in TASKS:
        group = next(g for g in groups["groups"] if g["name"] == groups["serving"][task])
        single, directions = metrics(task, task)
        for column, name in (("all", "cls+reg+bin"), ("group", run_name(group["tasks"]))):
            values, _ = metrics(name, task)
            gain = 100 * np.mean([relative_change(values[k], single[k], directions[k]) for k in single])
            assert float(rows[task][f"Δ% {column}"]) == pytest.approx(gain)
            gains[column].append(gain)
    assert float(rows["Δm"]["Δ% all"]) == pytest.approx(np.mean(gains["all"]))
    assert float(rows["Δm"]["Δ% group"]) == pytest.approx(np.mean(gains["group"]))

    main(argv)  # finished: nothing is trained again
    assert all(len(commands(run / "seed0")) == 1 for run in runs.iterdir())
    tiny3(config, max_epochs=2)
    with pytest.raises(RuntimeError, match=r"holds a run of another config"):
        main(argv)
