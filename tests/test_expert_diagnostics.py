import csv
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from mtl.callbacks.expert_diagnostics import (
    ExpertDiagnostics,
    dead_experts,
    effective_experts,
    load_cv,
    task_expert_mutual_information,
    utilisation_entropy,
)
from mtl.data import MultiTaskDataModule
from mtl.heads import BinaryHead, ClassificationHead, RegressionHead
from mtl.module import MultiTaskModule
from mtl.necks import CGC, HoME, MMoE, SharedBottom
from tests.toy import TinyEncoder, ToySource

TASKS = ("cls", "reg", "bin")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------- pure functions
def test_uniform_utilisation():
    U = torch.full((3, 4), 0.25)
    torch.testing.assert_close(utilisation_entropy(U), torch.full((3,), math.log(4), dtype=torch.float64))
    torch.testing.assert_close(effective_experts(U), torch.full((3,), 4.0, dtype=torch.float64))
    assert float(task_expert_mutual_information(U)) == pytest.approx(0.0, abs=1e-12)
    assert float(load_cv(U)) == pytest.approx(0.0, abs=1e-12)
    assert not dead_experts(U, 0.1).any()


def test_one_hot_tasks_on_distinct_experts():
    # Three tasks, each on its own expert; experts 3 and 4 unused.
    U = torch.zeros(3, 5)
    U[0, 0] = U[1, 1] = U[2, 2] = 1.0
    torch.testing.assert_close(effective_experts(U), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(utilisation_entropy(U), torch.zeros(3, dtype=torch.float64))
    assert float(task_expert_mutual_information(U)) == pytest.approx(math.log(3))
    assert float(task_expert_mutual_information(U, [1.0, 1.0, 1.0])) == pytest.approx(math.log(3))
    # Non-uniform p(t): MI = H(p).
    p = torch.tensor([0.5, 0.3, 0.2])
    assert float(task_expert_mutual_information(U, p * 7)) == pytest.approx(float(-(p * p.log()).sum()))
    assert dead_experts(U, 0.1).tolist() == [False, False, False, True, True]
    # Loads 1/3, 1/3, 1/3, 0, 0: mean 1/5, population std sqrt(6)/15.
    assert float(load_cv(U)) == pytest.approx(math.sqrt(6) / 15 * 5)


def test_dead_experts_threshold_and_full_collapse():
    U = torch.tensor([[0.97, 0.02, 0.01, 0.0], [0.9, 0.05, 0.05, 0.0]])
    # Loads 0.935, 0.035, 0.03, 0: below 0.1 / 4 = 0.025 only the last; below 0.5 / 4 all but the first.
    assert dead_experts(U, 0.1).tolist() == [False, False, False, True]
    assert int(dead_experts(U, 0.5).sum()) == 3
    collapsed = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2)
    assert float(load_cv(collapsed)) == pytest.approx(math.sqrt(3))
    assert float(task_expert_mutual_information(collapsed)) == pytest.approx(0.0, abs=1e-12)


def test_mutual_information_matches_definition():
    gen = torch.Generator().manual_seed(0)
    U = torch.rand(4, 6, generator=gen).double()
    U = U / U.sum(dim=1, keepdim=True)
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    joint = p.unsqueeze(1) * U
    marginal = joint.sum(dim=0)
    expected = (joint * (joint / (p.unsqueeze(1) * marginal)).log()).sum()
    assert float(task_expert_mutual_information(U, p)) == pytest.approx(float(expected))


def test_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        utilisation_entropy(torch.ones(4))
    with pytest.raises(ValueError, match="task_weights"):
        task_expert_mutual_information(torch.full((2, 2), 0.5), [1.0])
    with pytest.raises(ValueError, match="dead_threshold"):
        ExpertDiagnostics(dead_threshold=2.0)


# ----------------------------------------------------------------------------------- callback
def make_module(neck) -> MultiTaskModule:
    heads = {"cls": ClassificationHead(num_classes=3), "reg": RegressionHead(), "bin": BinaryHead()}
    return MultiTaskModule(encoder=TinyEncoder(), heads=heads, neck=neck)


def validate(module: MultiTaskModule, callback: ExpertDiagnostics, tmp_path: Path, logger=None) -> Trainer:
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        logger=logger if logger is not None else CSVLogger(tmp_path, name="run"),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    # 40 validation rows per task in batches of 16, 16, 8: the weighting by rows matters.
    data = MultiTaskDataModule(ToySource(n=16, val_n=40), batch_size=16)
    trainer.validate(module, datamodule=data, verbose=False)
    return trainer


def logged(trainer: Trainer) -> dict[str, float]:
    with open(Path(trainer.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for row in rows for k, v in row.items() if v not in ("", None)}


def test_mmoe_logs_diagnostics_and_heatmap(tmp_path):
    seed_everything(0)
    module = make_module(MMoE(num_experts=4, expert_hidden=[8]))
    callback = ExpertDiagnostics()
    trainer = validate(module, callback, tmp_path)

    metrics = logged(trainer)
    for key in ("experts/dead", "experts/load_cv", "experts/mutual_information"):
        assert key in metrics
    for task in TASKS:
        assert 1.0 <= metrics[f"experts/{task}/effective"] <= 4.0
        assert metrics[f"experts/{task}/entropy"] == pytest.approx(
            math.log(metrics[f"experts/{task}/effective"])
        )
        row = [metrics[f"experts/{task}/u{k}"] for k in range(4)]
        assert sum(row) == pytest.approx(1.0, abs=1e-6)

    tasks, U = callback.utilisation
    assert tasks == list(TASKS)
    torch.testing.assert_close(U.sum(dim=1), torch.ones(3, dtype=torch.float64))
    # U is each task's mean gate over all of its validation rows; gate_entropy the mean entropy of
    # its rows' gates; each expert's zero share its share of zero outputs over all validation rows.
    module.eval()
    source = ToySource(n=16, val_n=40).load()
    zeros = []
    with torch.no_grad():
        for i, task in enumerate(TASKS):
            x = module.encoder(torch.stack([source[task].val[j][0] for j in range(40)])).pooled
            gates = module.neck.gates[task](x)
            torch.testing.assert_close(U[i], gates.mean(dim=0).double(), atol=1e-6, rtol=1e-5)
            per_row = -(gates * gates.log()).sum(-1).mean()
            assert metrics[f"experts/{task}/gate_entropy"] == pytest.approx(float(per_row), rel=1e-5)
            assert metrics[f"experts/{task}/entropy"] > metrics[f"experts/{task}/gate_entropy"]
            zeros.append(module.neck.experts(x) == 0)
    shares = torch.cat(zeros).float().mean(dim=(0, 2))
    logged_shares = [metrics[f"experts/zero_share/level0/e{k}"] for k in range(4)]
    assert logged_shares == pytest.approx(shares.tolist(), abs=1e-6)
    assert metrics["experts/zero_share/level0/collapsed"] == float((shares > 0.9).sum())

    image = Path(trainer.log_dir) / "experts" / "epoch0.png"
    assert image.read_bytes()[:8] == PNG_MAGIC


def test_shared_bottom_logs_nothing(tmp_path):
    module = make_module(SharedBottom())
    callback = ExpertDiagnostics()
    trainer = validate(module, callback, tmp_path)
    assert not any(key.startswith("experts/") for key in logged(trainer))
    assert not (Path(trainer.log_dir) / "experts").exists()
    assert callback.utilisation is None


def test_cgc_gates_land_on_global_expert_indices(tmp_path):
    seed_everything(0)
    module = make_module(CGC(num_shared_experts=2, num_task_experts=1, expert_hidden=[8]))
    callback = ExpertDiagnostics(save_images=False)
    trainer = validate(module, callback, tmp_path)
    tasks, U = callback.utilisation
    assert tasks == list(TASKS)
    assert U.shape == (3, 3 * 1 + 2)
    for i in range(3):
        own_and_shared = [i, 3, 4]
        assert U[i, own_and_shared].sum() == pytest.approx(1.0)
        assert all(U[i, j] == 0 for j in range(3) if j != i)
    assert metrics_have(trainer, "experts/cls/u4")
    assert not (Path(trainer.log_dir) / "experts").exists()  # save_images=False


def test_home_gates_land_on_the_experts_each_task_sees(tmp_path):
    seed_everything(0)
    neck = HoME(1, 1, [8], task_categories={"cls": "a", "reg": "a", "bin": "b"}, expert_norm="layer")
    callback = ExpertDiagnostics(save_images=False)
    validate(make_module(neck), callback, tmp_path)
    tasks, U = callback.utilisation
    assert tasks == list(TASKS) and U.shape == (3, 3 + 2 + 1)  # level 2: [cls, reg, bin | a, b | shared]
    for i, visible in enumerate(([0, 3, 5], [1, 3, 5], [2, 4, 5])):
        assert U[i, visible].sum() == pytest.approx(1.0)
        assert all(U[i, j] == 0 for j in range(6) if j not in visible)
    assert sorted(callback.zero_shares) == ["level0", "level1"]  # Swish experts: shares of outputs <= 0
    assert all(((s >= 0) & (s <= 1)).all() for s in callback.zero_shares.values())


def metrics_have(trainer: Trainer, key: str) -> bool:
    return key in logged(trainer)


def test_tensorboard_gets_the_figure(tmp_path):
    seed_everything(0)
    trainer = validate(
        make_module(MMoE(num_experts=3, expert_hidden=[8])),
        ExpertDiagnostics(),
        tmp_path,
        logger=TensorBoardLogger(tmp_path, name="tb"),
    )
    assert (Path(trainer.log_dir) / "experts" / "epoch0.png").read_bytes()[:8] == PNG_MAGIC
    assert list(Path(trainer.log_dir).glob("events.out.tfevents.*"))


# ----------------------------------------------------------------------------------- aggregation
class Neck(SimpleNamespace):
    """What the callback reads of a neck: two levels of 3 experts, gates over all of them."""

    def expert_counts(self):
        return [3, 3]

    def gate_index(self, task):
        return None


class Strategy:
    """A strategy of a run over several ranks: ``reduce`` adds the other ranks' tensors."""

    def __init__(self, others=()):
        self.others, self.seen = list(others), []

    def reduce(self, tensor, reduce_op):
        assert reduce_op == "sum"
        self.seen.append(tensor.clone())
        return tensor + sum(self.others)


def fake_run(strategy: Strategy):
    module = SimpleNamespace(task_names=["a", "b"], device=torch.device("cpu"), neck=Neck())
    module.trainer = SimpleNamespace(strategy=strategy)
    module.logged = {}
    module.log_dict = lambda values, sync_dist: module.logged.update(values)
    trainer = SimpleNamespace(strategy=strategy, sanity_checking=False)
    return trainer, module


def batch_end(callback, trainer, module, rows: dict[str, int], stats: dict[str, list]):
    batch = {"targets": {t: torch.zeros(n) for t, n in rows.items()}}
    stats = {k: torch.tensor(v, dtype=torch.float32) for k, v in stats.items()}
    callback.on_validation_batch_end(trainer, module, {"stats": stats}, batch, 0)


# Two batches (rank 0) and one (rank 1), hand-made: gates, per-row entropies, zero shares and units.
RANK0 = [
    (
        {"a": 2},
        {
            "gate/a": [0.5, 0.5, 0.0],
            "gate_entropy/a": [math.log(2)],
            "zero_share/level0": [1.0, 0.5, 0.0],
            "expert_units/level0": [4.0, 4.0, 4.0],
        },
    ),
    (
        {"a": 6, "b": 1},
        {
            "gate/a": [0.9, 0.1, 0.0],
            "gate_entropy/a": [0.2],
            "gate/b": [0.0, 0.0, 1.0],
            "gate_entropy/b": [0.0],
            "gate_entropy_tokens/b": [0.5],
            "token_count/b": [3.0],
            "zero_share/level0": [0.25, 0.0, 1.0],
            "expert_units/level0": [12.0, 0.0, 4.0],  # a sparse dispatch: expert 1 served nothing
        },
    ),
]
RANK1 = [
    (
        {"b": 3},
        {
            "gate/b": [0.0, 0.5, 0.5],
            "gate_entropy/b": [math.log(2)],
            "gate_entropy_tokens/b": [0.1],
            "token_count/b": [7.0],
            "zero_share/level0": [0.0, 0.0, 0.5],
            "expert_units/level0": [3.0, 3.0, 3.0],
        },
    )
]


def collected(batches, others=()):
    callback = ExpertDiagnostics(save_images=False, zero_share_threshold=0.6)
    trainer, module = fake_run(Strategy(others))
    callback.on_validation_epoch_start(trainer, module)
    for rows, stats in batches:
        batch_end(callback, trainer, module, rows, stats)
    return callback, trainer, module


def test_two_ranks_log_exactly_what_one_rank_with_all_batches_logs():
    # Rank 1 alone first, to get the tensor it contributes to the collective.
    rank1, trainer1, module1 = collected(RANK1)
    rank1.on_validation_epoch_end(trainer1, module1)
    (contribution,) = trainer1.strategy.seen
    two, trainer, module = collected(RANK0, others=[contribution])
    one, trainer_one, module_one = collected(RANK0 + RANK1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no expert collapsed over the whole set: nothing is warned
        two.on_validation_epoch_end(trainer, module)
        one.on_validation_epoch_end(trainer_one, module_one)
    assert module.logged == pytest.approx(module_one.logged, abs=1e-12)

    # The values by hand.
    tasks, U = two.utilisation
    assert tasks == ["a", "b"]
    expected_u = torch.tensor([[0.8, 0.2, 0.0], [0.0, 1.5 / 4, 2.5 / 4]], dtype=torch.float64)
    torch.testing.assert_close(U, expected_u)
    logged = module.logged
    assert logged["experts/a/gate_entropy"] == pytest.approx((2 * math.log(2) + 6 * 0.2) / 8)
    assert logged["experts/b/gate_entropy"] == pytest.approx(3 * math.log(2) / 4)
    assert logged["experts/b/gate_entropy_tokens"] == pytest.approx((3 * 0.5 + 7 * 0.1) / 10)
    assert "experts/a/gate_entropy_tokens" not in logged
    # Zero shares weighted by units: expert 0: (4 + 3) / 19; expert 1: 2 / 7; expert 2: 5.5 / 11.
    shares = [(4 * 1.0 + 12 * 0.25) / 19, 2 / 7, (4 * 1.0 + 3 * 0.5) / 11]
    assert [logged[f"experts/zero_share/level0/e{k}"] for k in range(3)] == pytest.approx(shares)
    assert logged["experts/zero_share/level0/mean"] == pytest.approx(sum(shares) / 3)
    assert logged["experts/zero_share/level0/collapsed"] == 0.0  # 7/19 < 0.6 on the whole set
    assert "experts/zero_share/level1/mean" not in logged  # no level-1 stats were reported
    assert two.collapsed == {"level0": []}


def test_collapsed_experts_are_counted_and_warned_once():
    callback, trainer, module = collected(RANK0[:1])
    with pytest.warns(UserWarning, match=r"Expert\(s\) \[0\] of level0 output zero"):
        callback.on_validation_epoch_end(trainer, module)
    assert module.logged["experts/zero_share/level0/collapsed"] == 1.0
    assert callback.collapsed == {"level0": [0]}
    torch.testing.assert_close(
        callback.zero_shares["level0"], torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    )
    callback.on_validation_epoch_start(trainer, module)
    batch_end(callback, trainer, module, *RANK0[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same collapsed expert is not warned about again
        callback.on_validation_epoch_end(trainer, module)
    assert module.logged["experts/zero_share/level0/collapsed"] == 1.0


def test_bad_zero_share_threshold():
    with pytest.raises(ValueError, match="Expected `zero_share_threshold` to be a number in \\[0, 1\\]"):
        ExpertDiagnostics(zero_share_threshold=1.5)
