"""Mixture-of-experts necks under 2-rank DDP (gloo, torchrun) against one rank on the global batch:
the same weights after training, auxiliary losses included, and the same expert diagnostics.

One torchrun launch per neck; the one-rank reference runs the worker's `run` in this process.
"""

from __future__ import annotations

import pytest
import torch

from tests.distributed import worker
from tests.distributed.test_ddp import assert_close_weights, torchrun


def alone(*options: str) -> dict:
    """The worker's scenario on one process with the global batch (twice the per-rank batch)."""
    args = worker.parse(["fit", "unused", "--devices", "1", *options])
    args.batch_size *= 2
    return worker.run(args, strategy="auto")


def assert_same_diagnostics(ranks: list[dict], reference: dict) -> None:
    expected = reference["diagnostics"]
    for rank in ranks:
        got = rank["diagnostics"]
        assert got["tasks"] == expected["tasks"] == ["cls", "reg", "bin"]
        torch.testing.assert_close(got["utilisation"], expected["utilisation"], atol=1e-5, rtol=0)
        assert got["gate_entropy"] == pytest.approx(expected["gate_entropy"], abs=1e-5)
        assert got["zero_shares"].keys() == expected["zero_shares"].keys() == {"level0"}
        torch.testing.assert_close(
            got["zero_shares"]["level0"], expected["zero_shares"]["level0"], atol=1e-5, rtol=0
        )
        logged = {k: v for k, v in rank["metrics"].items() if k.startswith("experts/")}
        assert logged and logged == pytest.approx(
            {k: v for k, v in reference["metrics"].items() if k.startswith("experts/")}, abs=1e-5
        )


@pytest.mark.parametrize(
    ("neck", "layout"),
    [("mmoe", "homogeneous"), ("sparse", "all_tasks")],
    ids=["mmoe", "task_sparse_moe_with_aux_losses"],
)
def test_moe_neck_on_two_ranks_trains_and_diagnoses_as_one_rank(tmp_path, neck, layout):
    options = ["--neck", neck, "--layout", layout, "--batch_size", "8", "--diagnostics"]
    ranks = torchrun(tmp_path, "fit", *options)
    assert ranks[0]["world_size"] == 2
    assert_close_weights(ranks[0]["state_dict"], ranks[1]["state_dict"], atol=0)
    reference = alone(*options)
    assert_close_weights(ranks[0]["state_dict"], reference["state_dict"], atol=1e-5)
    if neck == "sparse":  # the auxiliary losses of the global batch, on every rank
        for rank in ranks:
            assert rank["metrics"]["val/aux_loss"] > 0
    assert_same_diagnostics(ranks, reference)
