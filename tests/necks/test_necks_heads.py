"""The neck -> head contract at `MultiTaskModule` construction: a mixture neck passes ``pooled`` and, when
it routes them, ``tokens``, never ``spatial`` maps; and each head reads the neck's output width."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtl.encoders import ModuleEncoder, SmallCNNEncoder
from mtl.features import Features
from mtl.heads import RegressionHead, TokenClassificationHead
from mtl.module import MultiTaskModule
from mtl.necks import CGC, HoME, MMoE, SharedBottom, TaskSparseMoE


class TokenNet(nn.Module):
    """``[B, L, 4]`` -> per-token states, their mean as ``pooled``, and a mask with padding."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> Features:
        tokens = torch.tanh(self.linear(x))
        mask = torch.ones(x.shape[:2], dtype=torch.long)
        mask[0, -1] = 0
        return Features(pooled=tokens.mean(1), tokens=tokens, mask=mask)


class SpatialHead(RegressionHead):
    """A head that declares it reads ``spatial`` maps (only the construction check matters here)."""

    reads = "spatial"


def token_module(neck) -> MultiTaskModule:
    encoder = ModuleEncoder(TokenNet(), out_features=6, provides=("tokens",))
    heads = {"tag": TokenClassificationHead(num_labels=3), "score": RegressionHead()}
    return MultiTaskModule(encoder=encoder, heads=heads, neck=neck)


@pytest.mark.parametrize(
    "neck",
    [
        MMoE(2, [5], route_tokens=False),
        CGC(1, 1, [5], route_tokens=False),
        TaskSparseMoE(3, 2, [5], route_tokens=False),
        HoME(1, 1, [5], route_tokens=False),
    ],
    ids=["mmoe", "cgc", "task_sparse_moe", "home"],
)
def test_a_token_head_behind_a_neck_that_drops_tokens_fails_at_construction(neck):
    name = type(neck).__name__
    with pytest.raises(
        ValueError,
        match=rf"Expected the neck {name} to pass `tokens` features to the head of task `tag` "
        r"\(TokenClassificationHead\), but it passes \['pooled'\]\..*route_tokens: true",
    ):
        token_module(neck)


def test_a_token_head_behind_a_neck_that_routes_tokens_trains():
    torch.manual_seed(0)
    module = token_module(MMoE(2, [5], route_tokens=True))
    x = torch.randn(3, 4, 4)
    out = module(x)
    assert out["tag"].shape == (3, 4, 3) and out["score"].shape == (3,)
    (out["tag"].square().mean() + out["score"].square().mean()).backward()
    assert module.neck.experts.weights[0].grad.abs().sum() > 0
    assert module.heads["tag"].net[-1].weight.shape == (3, 5)  # bound to the neck's width, not the encoder's


def test_a_spatial_head_behind_a_mixture_neck_fails_and_behind_shared_bottom_works():
    heads = lambda: {"depth": SpatialHead()}  # noqa: E731
    encoder = lambda: SmallCNNEncoder(in_channels=1, channels=[4], out_features=6)  # noqa: E731
    with pytest.raises(ValueError, match=r"to pass `spatial` features to the head of task `depth`"):
        MultiTaskModule(encoder=encoder(), heads=heads(), neck=MMoE(2, [5]))
    module = MultiTaskModule(encoder=encoder(), heads=heads(), neck=SharedBottom())
    assert module.neck.provides(module.encoder.provides) == {"pooled", "spatial"}


def test_a_head_whose_width_does_not_fit_the_neck_output_fails_at_construction():
    encoder = ModuleEncoder(nn.Linear(4, 6), out_features=6)
    with pytest.raises(
        ValueError, match=r"`in_features` of RegressionHead to match the encoder/neck output width 5"
    ):
        MultiTaskModule(encoder=encoder, heads={"score": RegressionHead(in_features=6)}, neck=MMoE(2, [8, 5]))
    module = MultiTaskModule(
        encoder=encoder, heads={"score": RegressionHead(in_features=5)}, neck=MMoE(2, [8, 5])
    )
    assert module(torch.randn(2, 4))["score"].shape == (2,)
