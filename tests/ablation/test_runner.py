"""The sweep runner with a stand-in for `run_fit`: skipping, order, parallel runs, failures, fingerprints."""

import json
import threading
import time
from pathlib import Path

import pytest

from mtl.ablation.manifest import RunSpec
from mtl.ablation.runner import RUN_INFO, run_sweep
from mtl.runs import RESULTS, RunFailed


def spec(name: str, seed: int = 0, fingerprint: str = "f") -> RunSpec:
    return RunSpec(
        f"{name}/seed{seed}", seed, ["base.yaml"], ["--seed_everything", str(seed)], fingerprint, name
    )


class FakeFit:
    """Records calls; writes results.json like run_fit; fails for folders named in `fail`."""

    def __init__(self, fail: tuple[str, ...] = (), delay: float = 0.0) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail, self.delay = fail, delay
        self.running = self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, configs, run_dir, args, **kwargs):
        with self.lock:
            self.calls.append((Path(run_dir).parent.name, kwargs))
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
        if Path(run_dir).parent.name in self.fail:
            raise RunFailed(f"Expected `mtl fit` in {run_dir} to finish, but it exited with code 1.")
        (Path(run_dir) / RESULTS).write_text(json.dumps({"metrics": {}, "higher_is_better": {}}))
        return {}


def test_runs_in_order_and_skips_finished_runs(tmp_path: Path) -> None:
    runs = [spec("a"), spec("b"), spec("c")]
    (tmp_path / "b" / "seed0").mkdir(parents=True)
    (tmp_path / "b" / "seed0" / RESULTS).write_text("{}")
    fit, lines = FakeFit(), []
    assert run_sweep(tmp_path, runs, fit=fit, log=lines.append) == []
    assert [name for name, _ in fit.calls] == ["a", "c"]
    assert "3 runs: 1 finished before, 2 to run (0 resume from a checkpoint), 1 at a time" in lines[0]
    assert fit.calls[0][1]["name"] == f"{tmp_path.name}/a/seed0"
    assert fit.calls[0][1]["env"] == {} and fit.calls[0][1]["wandb"] is None
    info = json.loads((tmp_path / "a" / "seed0" / RUN_INFO).read_text())
    assert info == {
        "fingerprint": "f",
        "configs": ["base.yaml"],
        "args": ["--seed_everything", "0"],
        "seed": 0,
    }


def test_parallel_jobs_overlap_and_share_the_cores(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    fit = FakeFit(delay=0.2)
    run_sweep(
        tmp_path, [spec(n) for n in "abcd"], jobs=2, fit=fit, log=lambda _: None, wandb={"project": "p"}
    )
    assert fit.peak == 2
    assert all(kwargs["env"] == {"OMP_NUM_THREADS": "4"} for _, kwargs in fit.calls)
    assert all(kwargs["wandb"] == {"project": "p", "group": tmp_path.name} for _, kwargs in fit.calls)


def test_a_failed_run_does_not_stop_the_others(tmp_path: Path) -> None:
    fit, lines = FakeFit(fail=("b",)), []
    failures = run_sweep(tmp_path, [spec("a"), spec("b"), spec("c")], fit=fit, log=lines.append)
    assert [f.run.dir for f in failures] == ["b/seed0"]
    assert "exited with code 1" in failures[0].error
    assert [name for name, _ in fit.calls] == ["a", "b", "c"]
    assert any("FAILED b seed 0" in line for line in lines)


def test_a_folder_of_another_experiment_stops_the_sweep_before_any_run(tmp_path: Path) -> None:
    run_sweep(tmp_path, [spec("a"), spec("b")], fit=FakeFit(), log=lambda _: None)
    (tmp_path / "b" / "seed0" / RESULTS).unlink()
    (tmp_path / "b" / "seed0" / "last.ckpt").write_bytes(b"")  # b was interrupted after a checkpoint
    for changed in ("a", "b"):  # finished, half-finished
        fit = FakeFit()
        with pytest.raises(RuntimeError, match="holds a run of another config"):
            run_sweep(tmp_path, [spec("c"), spec(changed, fingerprint="g")], fit=fit, log=lambda _: None)
        assert fit.calls == []
    with pytest.raises(ValueError, match="`jobs` to be >= 1"):
        run_sweep(tmp_path, [spec("a")], jobs=0, fit=FakeFit())


def test_a_folder_that_never_started_takes_the_new_plan(tmp_path: Path) -> None:
    failed = run_sweep(tmp_path, [spec("a")], fit=FakeFit(fail=("a",)), log=lambda _: None)
    assert len(failed) == 1 and not list((tmp_path / "a" / "seed0").glob("*.ckpt"))
    run_sweep(tmp_path, [spec("a", fingerprint="g")], fit=FakeFit(), log=lambda _: None)
    assert json.loads((tmp_path / "a" / "seed0" / RUN_INFO).read_text())["fingerprint"] == "g"


def test_a_new_optional_setting_left_at_none_keeps_the_fingerprint() -> None:
    from mtl.ablation.resolved import fingerprint

    before = {
        "model": {"heads": {"a": {"class_path": "H", "init_args": {"k": 3}}}, "lr": 0.1},
        "seed_everything": 0,
    }
    after = {
        "model": {
            "heads": {"a": {"class_path": "H", "init_args": {"k": 3, "new": None}}},
            "lr": 0.1,
            "x": None,
        }
    }
    assert fingerprint({**after, "seed_everything": 0}) == fingerprint(before)
    assert fingerprint({**before, "model": {**before["model"], "lr": 0.2}}) != fingerprint(before)
