import csv
import math

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger

from mtl.callbacks import TaskSamplingMonitor
from mtl.data import MultiTaskDataModule, collate
from mtl.data.samplers import SpecifiedSampler
from mtl.heads import BinaryHead, ClassificationHead, RegressionHead, TokenClassificationHead
from mtl.module import MultiTaskModule
from tests.toy import TinyEncoder, ToySource


def make_module(**kwargs) -> MultiTaskModule:
    heads = {"cls": ClassificationHead(num_classes=3), "reg": RegressionHead(), "bin": BinaryHead()}
    return MultiTaskModule(encoder=TinyEncoder(), heads=heads, **kwargs)


def trainer(**kwargs) -> Trainer:
    defaults = dict(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    return Trainer(**{**defaults, **kwargs})


def batch_of(source: ToySource, split: str = "train", rows: int = 64):
    data = source.load()
    return {task: collate([(task, *getattr(s, split)[i]) for i in range(rows)]) for task, s in data.items()}


def test_training_lowers_every_task_loss():
    seed_everything(0)
    source = ToySource(n=512)
    module = make_module(optimizer=lambda p: torch.optim.Adam(p, lr=0.02))
    batches = batch_of(source, "val")

    def losses():
        with torch.no_grad():
            return {t: float(module.task_losses(b).total) for t, b in batches.items()}

    before = losses()
    trainer(max_epochs=3).fit(module, datamodule=MultiTaskDataModule(source, batch_size=32))
    after = losses()
    for task in before:
        assert after[task] < 0.7 * before[task], (task, before[task], after[task])


def test_mixed_batch_equals_per_task_losses():
    seed_everything(0)
    module = make_module()
    data = ToySource(n=16).load()
    examples = [(t, *data[t].train[i]) for i in range(4) for t in ("cls", "reg", "bin")]
    mixed = collate(examples)
    assert mixed["routes"]["cls"].tolist() == [0, 3, 6, 9]
    module.eval()
    with torch.no_grad():
        raw = module(mixed["inputs"], mixed["routes"])
        for task in ("cls", "reg", "bin"):
            single = collate([(task, *data[task].train[i]) for i in range(4)])
            alone = module(single["inputs"], single["routes"])[task]
            torch.testing.assert_close(raw[task], alone)


def test_partial_labels_are_left_out_of_loss():
    module = make_module()
    module.eval()
    data = ToySource(n=16, missing_every=2, tasks=("cls",)).load()["cls"].train
    batch = collate([("cls", *data[i]) for i in range(8)])
    assert batch["routes"]["cls"].tolist() == [1, 3, 5, 7]
    labelled = collate([("cls", *data[i]) for i in (1, 3, 5, 7)])
    with torch.no_grad():
        assert torch.isclose(module.task_losses(batch).total, module.task_losses(labelled).total)


def test_validation_logs_per_task_metrics_and_mean():
    module = make_module()
    result = trainer().validate(
        module, datamodule=MultiTaskDataModule(ToySource(n=64), batch_size=16), verbose=False
    )[0]
    for key in ("val/cls/accuracy", "val/bin/auroc", "val/reg/mse", "val/cls/loss", "val/mean"):
        assert key in result, sorted(result)
    expected = (result["val/cls/accuracy"] + result["val/bin/auroc"] - result["val/reg/mse"]) / 3
    assert math.isclose(result["val/mean"], expected, rel_tol=1e-5)


def test_the_mean_can_follow_some_tasks_only():
    module = make_module(mean_over=["cls", "reg"])  # e.g. `bin` an auxiliary task
    result = trainer().validate(
        module, datamodule=MultiTaskDataModule(ToySource(n=64), batch_size=16), verbose=False
    )[0]
    assert "val/bin/auroc" in result  # still measured and logged
    expected = (result["val/cls/accuracy"] - result["val/reg/mse"]) / 2
    assert math.isclose(result["val/mean"], expected, rel_tol=1e-5)
    for bad in ([], ["cls", "nope"]):
        with pytest.raises(ValueError, match="Expected `mean_over` to name at least one of the tasks"):
            make_module(mean_over=bad)


def test_predict_returns_every_task_for_every_row_even_unlabelled():
    module = make_module()
    source = ToySource(n=32, missing_every=1)  # not a single `cls` label
    out = trainer().predict(module, datamodule=MultiTaskDataModule(source, batch_size=8))
    assert sum(len(b["cls"]) for b in out) == 3 * 16  # every test row of every task
    assert all(set(b) == {"cls", "reg", "bin"} for b in out)
    torch.testing.assert_close(out[0]["cls"].sum(dim=1), torch.ones(8))


def test_separate_learning_rates():
    module = make_module(encoder_lr=1e-4, head_lr=1e-2)
    groups = module.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == [1e-4, 1e-2]
    n_encoder = sum(p.numel() for p in module.encoder.parameters())
    assert sum(p.numel() for p in groups[0]["params"]) == n_encoder


# ------------------------------------------------------------------------------ bad input
def test_unknown_task_in_batch():
    module = make_module()
    batch = collate([("nope", torch.zeros(8), torch.tensor(0))])
    with pytest.raises(KeyError, match="unknown task"):
        module.task_losses(batch)


def test_head_that_reads_tokens_needs_a_token_encoder():
    with pytest.raises(ValueError, match="provide `tokens`"):
        MultiTaskModule(encoder=TinyEncoder(), heads={"tag": TokenClassificationHead(num_labels=3)})


def test_head_without_data_and_data_without_head():
    module = make_module()
    dm = MultiTaskDataModule(ToySource(n=32, tasks=("cls", "reg")), batch_size=8)
    with pytest.raises(ValueError, match=r"\['bin'\] are not in the data source"):
        trainer().fit(module, datamodule=dm)
    module = MultiTaskModule(encoder=TinyEncoder(), heads={"cls": ClassificationHead(num_classes=3)})
    with pytest.raises(ValueError, match=r"\['reg', 'bin'\] have none"):
        trainer().fit(module, datamodule=MultiTaskDataModule(ToySource(n=32), batch_size=8))


def test_labels_out_of_range_fail_before_training():
    module = MultiTaskModule(encoder=TinyEncoder(), heads={"cls": ClassificationHead(num_classes=2)})
    dm = MultiTaskDataModule(ToySource(n=32, tasks=("cls",)), batch_size=8)
    with pytest.raises(ValueError, match="cls"):
        trainer().fit(module, datamodule=dm)


def test_encoder_input_spec_is_checked():
    module = MultiTaskModule(
        encoder=TinyEncoder(num_features=5), heads={"cls": ClassificationHead(num_classes=3)}
    )
    with pytest.raises(ValueError, match="Expected 5 features"):
        trainer().fit(module, datamodule=MultiTaskDataModule(ToySource(n=32, tasks=("cls",)), batch_size=8))


def test_nan_loss_names_task_and_step():
    module = make_module()
    data = ToySource(n=8, tasks=("reg",)).load()["reg"].train
    batch = collate([("reg", data[0][0], torch.tensor(math.inf))])
    with pytest.raises(FloatingPointError, match=r"step 0 .*'reg'"):
        module._shared_step(batch, "train")


def test_bad_task_names_and_loss_weights():
    with pytest.raises(ValueError, match="identifiers"):
        MultiTaskModule(encoder=TinyEncoder(), heads={"a.b": BinaryHead()})
    with pytest.raises(ValueError, match="loss_weights"):
        MultiTaskModule(encoder=TinyEncoder(), heads={"a": BinaryHead()}, loss_weights={"b": 1.0})


def test_task_sampling_monitor_logs_the_sampler_probabilities(tmp_path):
    data = MultiTaskDataModule(ToySource(n=32), batch_size=8, sampler=SpecifiedSampler([0.5, 0.25, 0.25]))
    logger = CSVLogger(tmp_path)
    trainer(logger=logger, callbacks=[TaskSamplingMonitor(every_n_steps=1)], log_every_n_steps=1).fit(
        make_module(), datamodule=data
    )
    with open(f"{logger.log_dir}/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("sampling/cls")]
    assert rows and all(float(r["sampling/cls"]) == 0.5 and float(r["sampling/bin"]) == 0.25 for r in rows)
