"""`mtl.runs.run_fit`: a run in its own directory, its results file, no re-run once finished, resume."""

from pathlib import Path

import pytest
import yaml

from mtl.runs import ForkServerLauncher, RunFailed, latest_checkpoint, read_results, run_fit
from tests.test_cli import TINY


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_run_fit_writes_results_and_skips_finished_runs(config: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    results = run_fit([config], run_dir, ["--trainer.max_epochs", "1"])
    assert set(results["metrics"]) >= {"test/cls/accuracy", "test/reg/mse", "test/mean", "best/val/mean"}
    directions = results["higher_is_better"]
    assert directions["test/cls/accuracy"] and directions["best/val/mean"] and not directions["test/reg/mse"]
    assert set(directions) == set(results["metrics"])
    assert read_results(run_dir) == results
    assert latest_checkpoint(run_dir) is not None
    assert (run_dir / "csv").is_dir()
    # A finished run is not run again, even with arguments that would fail.
    assert run_fit([config], run_dir, ["--no_such_flag", "1"]) == results


def test_run_fit_resumes_from_last_checkpoint(config: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_fit([config], run_dir, ["--trainer.max_epochs", "1"])
    (run_dir / "results.json").unlink()  # as if interrupted after the first epoch's checkpoint
    run_fit([config], run_dir, ["--trainer.max_epochs", "2"])
    commands = [line for line in (run_dir / "log.txt").read_text().splitlines() if line.startswith("$ ")]
    assert len(commands) == 2
    assert "--ckpt_path" not in commands[0]
    assert "--ckpt_path" in commands[1] and "last" in commands[1]
    assert "Restoring states from the checkpoint" in (run_dir / "log.txt").read_text()


def test_run_fit_failure_names_the_run_and_shows_the_log(config: Path, tmp_path: Path) -> None:
    with pytest.raises(RunFailed, match="exited with code"):
        run_fit([config], tmp_path / "bad", ["--model.heads.nope", "1"])
    assert not (tmp_path / "bad" / "results.json").exists()


def test_fork_server_launcher_runs_in_the_callers_folder_and_returns_the_exit_code(
    config: Path, tmp_path: Path, monkeypatch
) -> None:
    launcher = ForkServerLauncher(preload=["tests.toy"])
    log = tmp_path / "log.txt"
    monkeypatch.chdir(config.parent)  # the child resolves the relative path from here
    assert launcher.launch(["fit", "--config", config.name, "--print_config"], log, {}) == 0
    assert "tests.toy.TinyEncoder" in log.read_text()
    assert launcher.launch(["fit", "--config", config.name, "--no_such_flag", "1"], log, {}) == 2
    assert "no_such_flag" in log.read_text()
    assert launcher.describe(["fit", "--config", "a.yaml"]).startswith("mtl fit --config a.yaml")


def test_run_fit_with_the_fork_server_launcher(config: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    results = run_fit([config], run_dir, ["--trainer.max_epochs", "1"], launcher=ForkServerLauncher())
    assert results == read_results(run_dir) and "test/cls/accuracy" in results["metrics"]
    (command,) = [line for line in (run_dir / "log.txt").read_text().splitlines() if line.startswith("$ ")]
    assert command.startswith("$ mtl fit --config") and "forked from a preloaded server" in command


class LostStatusLauncher(ForkServerLauncher):
    """Finishes the run (writes results.json) but reports exit code 255, as Python's forkserver does when
    it cannot pass a child's status on."""

    def __init__(self, results: str) -> None:
        super().__init__()
        self.results = results

    def launch(self, argv, log, env) -> int:
        Path(log).parent.joinpath("results.json").write_text(self.results)
        return 255


def test_a_finished_run_whose_exit_code_was_lost_is_kept(config: Path, tmp_path: Path) -> None:
    payload = '{"metrics": {"test/mean": 0.5}, "higher_is_better": {"test/mean": true}}'
    results = run_fit([config], tmp_path / "run", launcher=LostStatusLauncher(payload))
    assert results["metrics"] == {"test/mean": 0.5}
    assert "exit code 255 after results.json was written" in (tmp_path / "run" / "log.txt").read_text()
