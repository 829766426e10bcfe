"""`mtl ablate` end to end on the tiny toy config (2 configurations x 2 seeds + 2 baselines x 2 seeds, one
epoch each): the runs, the report made from them, and resuming an interrupted sweep."""

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest
import yaml

from mtl.ablation.command import main
from mtl.ablation.manifest import Manifest
from mtl.delta_m import delta_m
from mtl.report import write_report


def commands(run: Path) -> list[str]:
    return [line for line in (run / "log.txt").read_text().splitlines() if line.startswith("$ ")]


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("grid") / "width.yaml"
    path.write_text(
        yaml.safe_dump({"axes": {"width": {"key": "model.encoder.init_args.width", "values": [4, 16]}}})
    )
    return path


@pytest.fixture(scope="module")
def sweep(tiny_config: Path, grid: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "out"
    main(
        ["--config", str(tiny_config), "--grid", str(grid), "--seeds", "2", "--out", str(out), "--jobs", "2"]
    )
    return out


def test_every_run_finishes_in_its_folder(sweep: Path) -> None:
    manifest = Manifest.read(sweep)
    assert [c.name for c in manifest.configurations] == ["width-4", "width-16"]
    assert manifest.seeds == [0, 1] and len(manifest.runs) == 8
    for run in manifest.runs:
        results = json.loads((sweep / run.dir / "results.json").read_text())
        assert {"test/mean", "best/val/mean"} <= set(results["metrics"])
        (command,) = commands(sweep / run.dir)
        assert f"--seed_everything {run.seed}" in command and "forked from a preloaded server" in command
    single = json.loads((sweep / manifest.baselines["cls"].dir / "seed0" / "results.json").read_text())
    assert "test/cls/accuracy" in single["metrics"] and not any("/reg/" in k for k in single["metrics"])


def test_report_of_the_sweep(sweep: Path, tmp_path: Path) -> None:
    report, files = write_report(sweep, tmp_path)
    names = sorted(f.name for f in files)
    assert names == ["bars_cls.png", "bars_reg.png", "report.csv", "report.md", "tradeoff_cls_reg.png"]
    for png in (f for f in files if f.suffix == ".png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert len(rows) == 2 * 2 + 2  # configurations x tasks, then the baselines' tasks
    assert {r["n_seeds"] for r in rows} == {"2"}
    # Δm recomputed here from the raw results files: seed means, then LibMTL's formula.
    manifest = Manifest.read(sweep)

    def means(runs, tasks):
        values = [json.loads((sweep / r.dir / "results.json").read_text())["metrics"] for r in runs]
        return {t: {m: statistics.fmean(v[f"test/{t}/{m}"] for v in values)} for t, m in tasks.items()}

    primary = {"cls": "accuracy", "reg": "mse"}
    base = {}
    for task in primary:
        base.update(means([r for r in manifest.runs if r.task == task], {task: primary[task]}))
    for name in ("width-4", "width-16"):
        expected = delta_m(
            means([r for r in manifest.runs if r.configuration == name], primary),
            base,
            {"cls": {"accuracy": True}, "reg": {"mse": False}},
        )
        row = next(r for r in report.rows if r.name == name)
        assert row.delta_m == pytest.approx(expected, rel=1e-9)
        assert float(next(r for r in rows if r["configuration"] == name)["delta_m_pct"]) == pytest.approx(
            expected
        )
    best = [line for line in (tmp_path / "report.md").read_text().splitlines() if "★ |" in line]
    assert len(best) == 1 and report.rows[0].name in best[0]


def test_an_interrupted_sweep_resumes_without_rerunning_finished_runs(
    sweep: Path, tiny_config: Path, grid: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(sweep, out)
    manifest = Manifest.read(out)
    interrupted = out / "width-4" / "seed1"
    (interrupted / "results.json").unlink()  # killed after its last checkpoint
    never_started = out / manifest.baselines["reg"].dir / "seed1"
    shutil.rmtree(never_started)
    finished = {
        r.dir: (out / r.dir / "results.json").stat().st_mtime_ns
        for r in manifest.runs
        if (out / r.dir / "results.json").is_file()
    }
    assert len(finished) == 6

    main(
        ["--config", str(tiny_config), "--grid", str(grid), "--seeds", "2", "--out", str(out), "--jobs", "2"]
    )

    first, resumed = commands(interrupted)
    assert "--ckpt_path" not in first and "--ckpt_path" in resumed and "last" in resumed
    (fresh,) = commands(never_started)
    assert "--ckpt_path" not in fresh
    for folder, mtime in finished.items():
        assert len(commands(out / folder)) == 1
        assert (out / folder / "results.json").stat().st_mtime_ns == mtime
    assert all((out / r.dir / "results.json").is_file() for r in manifest.runs)
