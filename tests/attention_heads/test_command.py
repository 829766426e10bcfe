"""``mtl heads`` end to end on a tiny BERT: checkpoint in, importance matrices and pruning curves out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from mtl.attention_heads import evaluate_tasks, head_importance, task_batches
from mtl.cli import MultiTaskCLI, main
from mtl.data.datamodule import MultiTaskDataModule
from mtl.module import MultiTaskModule
from tests.attention_heads.builders import TINY_BERT


def _config(tmp_path: Path) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_steps": 1,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_val_batches": 0,
            "default_root_dir": str(tmp_path),
        },
        "model": {
            "encoder": {"class_path": "mtl.encoders.HuggingFaceEncoder", "init_args": {"config": TINY_BERT}},
            "heads": {
                "first": {"class_path": "mtl.heads.ClassificationHead", "init_args": {"num_classes": 2}},
                "last": {"class_path": "mtl.heads.ClassificationHead", "init_args": {"num_classes": 3}},
            },
        },
        "data": {
            "source": {"class_path": "tests.attention_heads.builders.TokenSource", "init_args": {"n": 32}},
            "batch_size": 8,
            "eval_batch_size": 16,
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _build(config: Path) -> MultiTaskCLI:
    return MultiTaskCLI(
        MultiTaskModule,
        MultiTaskDataModule,
        save_config_callback=None,
        auto_configure_optimizers=False,
        args=["--config", str(config)],
        run=False,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, MultiTaskCLI]:
    """A tiny config, a checkpoint of one training step on it, and the CLI objects that trained it."""
    tmp_path = tmp_path_factory.mktemp("heads_command")
    config = _config(tmp_path)
    cli = _build(config)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    checkpoint = tmp_path / "tiny.ckpt"
    cli.trainer.save_checkpoint(checkpoint)
    return config, checkpoint, cli


def test_command_writes_importance_and_pruning_curve(
    trained: tuple[Path, Path, MultiTaskCLI], tmp_path: Path
) -> None:
    config, checkpoint, cli = trained
    out = tmp_path / "heads"
    args = [
        "heads",
        "--config",
        str(config),
        "--ckpt_path",
        str(checkpoint),
        "--batches",
        "2",
        "--batch-size",
        "5",
    ]
    main([*args, "--prune-steps", "2", "--prune-by", "all", "--out", str(out), "--device", "cpu", "--no-log"])

    # The same numbers from the checkpoint's weights, computed here step by step.
    model = cli.model.cpu()
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    datamodule = cli.datamodule
    datamodule.setup()
    samples = [b for t in ("first", "last") for b in task_batches(datamodule, t, "train", 5, 2, seed=0)]
    expected = head_importance(model, samples)
    for task in ("first", "last"):
        rows = list(csv.reader((out / "importance" / f"{task}.csv").open()))
        written = torch.tensor([[float(v) for v in row[1:]] for row in rows[1:]])
        assert torch.allclose(written, expected[task], rtol=1e-4)
        normalized = list(csv.reader((out / "importance" / f"{task}_layer_normalized.csv").open()))
        written = torch.tensor([[float(v) for v in row[1:]] for row in normalized[1:]])
        assert torch.allclose(written.norm(dim=1), torch.ones(3), rtol=1e-4)
        assert (out / "importance" / f"{task}.png").stat().st_size > 0

    curve = list(csv.DictReader((out / "pruning_curve.csv").open()))
    assert len(curve) == 3 * 3 * 2  # rankings (mean, first, last) x steps (0, 6, 12 heads) x tasks
    assert sorted({int(r["heads_pruned"]) for r in curve}) == [0, 6, 12]
    unpruned = evaluate_tasks(model, datamodule.val_dataloader())
    model.encoder.set_head_mask(torch.zeros(3, 4))
    all_off = evaluate_tasks(model, datamodule.val_dataloader())
    for row in curve:
        reference = {"0": unpruned, "12": all_off}.get(row["heads_pruned"])
        if reference is not None:
            assert float(row["value"]) == pytest.approx(reference[row["task"]])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layers"] == 3 and summary["heads_per_layer"] == 4
    assert summary["importance_examples_per_task"] == {"first": 10, "last": 10}
    # No pruning and full pruning are evaluated once for all three rankings: at most 1 + 3 + 1 evaluations.
    assert 3 <= summary["pruning_evaluations"] <= 5
    for ranking in ("mean", "first", "last"):
        assert sorted(map(tuple, summary["pruning_order"][ranking])) == [
            (layer, head) for layer in range(3) for head in range(4)
        ]
    assert (out / "pruning_curve.png").stat().st_size > 0


def test_command_rejects_unknown_ranking(trained: tuple[Path, Path, MultiTaskCLI], tmp_path: Path) -> None:
    config, checkpoint, _ = trained
    with pytest.raises(SystemExit, match=r"Expected --prune-by to name 'mean', 'all' or tasks of the model"):
        main(
            [
                "heads",
                "--config",
                str(config),
                "--ckpt_path",
                str(checkpoint),
                "--prune-by",
                "nope",
                "--out",
                str(tmp_path),
            ]
        )
