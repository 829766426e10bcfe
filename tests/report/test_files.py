"""`mtl report`: the Markdown and CSV files, the figures, and the W&B log, from a hand-made sweep."""

import csv
from pathlib import Path

import pytest

from mtl.report.command import main, write_report
from mtl.report.figures import task_bars
from mtl.report.results import collect
from mtl.report.table import build_report
from mtl.report.writers import CSV_FIELDS
from tests.report.sweeps import make_sweep
from tests.report.test_table import BAD, BASELINES, GOOD

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    return make_sweep(tmp_path / "sweep", {"x-bad": BAD, "x-good": GOOD}, BASELINES, [0, 1])


def test_markdown_table_marks_the_best_and_shows_the_baselines(sweep: Path) -> None:
    write_report(sweep)
    lines = (sweep / "report.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| rank"))
    assert header == "| rank | configuration | axis | a accuracy ↑ | b mse ↓ | Δm (%) | seeds |"
    rows = [line for line in lines if line.startswith("| 1 ★") or line.startswith("| 2 ")]
    good_delta = 50 * ((0.86 - 0.81) / 0.81 + (1.1 - 1.0) / 1.1)
    assert rows[0].startswith(
        f"| 1 ★ | **x-good** | good | 0.8600 ± 0.0141 | 1.0000 ± 0.1414 | **{good_delta:+.2f} ± "
    )
    assert rows[1].startswith("| 2 | x-bad | bad |")
    assert any(
        line.startswith("| - | single-task (each task alone) |  | 0.8100 ± 0.0141 | 1.1000 ± 0.1414 |")
        for line in lines
    )
    assert "![tradeoff_a_b](tradeoff_a_b.png)" in lines


def test_csv_has_one_row_per_configuration_task_and_metric(sweep: Path) -> None:
    write_report(sweep)
    with (sweep / "report.csv").open() as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == [*CSV_FIELDS, "axis"]
        rows = list(reader)
    assert [(r["configuration"], r["task"]) for r in rows] == [
        ("x-good", "a"),
        ("x-good", "b"),
        ("x-bad", "a"),
        ("x-bad", "b"),
        ("single-task", "a"),
        ("single-task", "b"),
    ]
    good_b = rows[1]
    assert (good_b["metric"], good_b["higher_is_better"], good_b["rank"], good_b["best"]) == (
        "mse",
        "false",
        "1",
        "true",
    )
    assert float(good_b["mean"]) == pytest.approx(1.0) and float(good_b["baseline_mean"]) == pytest.approx(
        1.1
    )
    assert float(good_b["task_delta_pct"]) == pytest.approx(100 * 0.1 / 1.1)
    assert rows[4]["task_delta_pct"] == "" and rows[4]["rank"] == "" and rows[4]["best"] == ""


def test_figures_are_pngs_and_name_their_tasks(sweep: Path, tmp_path: Path) -> None:
    _, files = write_report(sweep, tmp_path / "elsewhere")
    pngs = sorted(f.name for f in files if f.suffix == ".png")
    assert pngs == ["bars_a.png", "bars_b.png", "tradeoff_a_b.png"]
    assert all((tmp_path / "elsewhere" / name).read_bytes()[:8] == PNG for name in pngs)
    assert not (sweep / "report.md").exists()
    report = build_report(collect(sweep))
    with pytest.raises(ValueError, match="task of the report"):
        task_bars(report, "c")


def test_command_prints_the_ranking_and_logs_to_wandb_offline(
    sweep: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: offline
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    import wandb

    try:
        main([str(sweep), "--wandb", "mtl-test"])
    finally:
        wandb.teardown()  # W&B keeps process-wide settings (HOME, mode) that would leak into later tests
    printed = capsys.readouterr().out
    assert "  1 * x-good" in printed and "logged to W&B project mtl-test" in printed
    offline = list((sweep / "wandb").glob("offline-run-*"))
    assert offline and list(offline[0].glob("*.wandb"))
    with pytest.raises(SystemExit, match=r"sweep.json"):
        main([str(tmp_path / "nothing")])
