"""The contract every gradient aggregator honours, on random and degenerate inputs."""

from __future__ import annotations

import pytest
import torch

import mtl.balancing as balancing
from mtl.balancing import GradientAggregator
from mtl.balancing.aggregator import nonfinite_rows

AGGREGATORS = [
    balancing.PCGrad,
    balancing.GradVac,
    balancing.CAGrad,
    balancing.MGDA,
    balancing.IMTLG,
    balancing.GradDrop,
    balancing.UPGrad,
    balancing.AlignedMTL,
    balancing.NashMTL,
    balancing.DBMTL,
    balancing.FairGrad,
]
IDS = [cls.__name__ for cls in AGGREGATORS]


def test_every_method_is_exported_from_one_module() -> None:
    names = {"PCGrad", "CAGrad", "MGDA", "IMTLG", "NashMTL", "AlignedMTL", "UPGrad", "GradVac", "GradDrop"}
    names |= {"DBMTL", "FairGrad"}
    assert names <= set(balancing.__all__)
    assert all(issubclass(getattr(balancing, name), GradientAggregator) for name in names)


@pytest.mark.parametrize("cls", AGGREGATORS, ids=IDS)
@pytest.mark.parametrize("T", [2, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_gradients_give_a_finite_direction(
    cls: type[GradientAggregator], T: int, dtype: torch.dtype
) -> None:
    G = torch.randn(T, 40, generator=torch.Generator().manual_seed(T), dtype=dtype)
    d = cls()(G)
    assert d.shape == (40,)
    assert d.dtype == dtype
    assert d.device == G.device
    assert torch.isfinite(d).all()


@pytest.mark.parametrize("cls", AGGREGATORS, ids=IDS)
@pytest.mark.parametrize("T", [2, 5])
def test_identical_gradients_give_a_positive_multiple(cls: type[GradientAggregator], T: int) -> None:
    g = torch.randn(30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = cls()(g.repeat(T, 1))
    scale = (d @ g) / (g @ g)
    assert scale > 0
    torch.testing.assert_close(d, scale * g)


@pytest.mark.parametrize("cls", AGGREGATORS, ids=IDS)
def test_identical_gradients_give_the_documented_scale(cls: type[GradientAggregator]) -> None:
    T, g = 3, torch.tensor([3.0, 4.0], dtype=torch.float64)  # ||g|| = 5
    expected = {
        "CAGrad": 1.5 / 1.25,
        "NashMTL": 1.0 / 5.0,  # T g = 15 g / ... clipped to norm 1
        "DBMTL": 0.1,
        "FairGrad": 3**0.5 / 5.0,
    }.get(cls.__name__, 1.0)
    torch.testing.assert_close(cls()(g.repeat(T, 1)), expected * g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", AGGREGATORS, ids=IDS)
def test_a_nan_row_is_named(cls: type[GradientAggregator]) -> None:
    G = torch.randn(3, 5)
    G[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"row\(s\) \[1\]"):
        cls()(G)


@pytest.mark.parametrize("cls", AGGREGATORS, ids=IDS)
def test_an_inf_row_is_named(cls: type[GradientAggregator]) -> None:
    G = torch.randn(4, 5)
    G[3, 0] = float("inf")
    with pytest.raises(ValueError, match=r"Expected `G` to be finite.*\[3\]"):
        cls()(G)


@pytest.mark.parametrize("cls", AGGREGATORS, ids=IDS)
@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), (0, 3), (2, 0)])
def test_wrong_shapes_are_rejected(cls: type[GradientAggregator], shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"Expected `G` to be a 2-D tensor of shape \[T, D\]"):
        cls()(torch.ones(shape))


def test_integer_gradients_are_rejected() -> None:
    with pytest.raises(ValueError, match="floating-point"):
        balancing.MGDA()(torch.ones(2, 3, dtype=torch.long))


@pytest.mark.parametrize("cls", AGGREGATORS, ids=IDS)
def test_a_single_task_gives_a_positive_multiple_of_its_gradient(cls: type[GradientAggregator]) -> None:
    g = torch.tensor([[1.0, -2.0, 0.5]])
    d = cls()(g)
    torch.testing.assert_close(d, (d @ g[0]) / (g[0] @ g[0]) * g[0])


@pytest.mark.parametrize("cls", AGGREGATORS, ids=IDS)
def test_a_zero_gradient_row_gives_a_finite_direction(cls: type[GradientAggregator]) -> None:
    G = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.5]])
    assert torch.isfinite(cls()(G)).all()


@pytest.mark.parametrize("cls", AGGREGATORS, ids=IDS)
def test_reset_makes_calls_reproducible(cls: type[GradientAggregator]) -> None:
    gen = torch.Generator().manual_seed(3)
    Gs = [torch.randn(3, 20, generator=gen, dtype=torch.float64) for _ in range(3)]
    aggregator = cls()
    first = [aggregator(G) for G in Gs]
    aggregator.reset()
    second = [aggregator(G) for G in Gs]
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cls", AGGREGATORS, ids=IDS)
def test_weights_reproduce_the_direction_where_defined(cls: type[GradientAggregator]) -> None:
    G = torch.randn(4, 25, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    aggregator = cls() if cls is not balancing.NashMTL else cls(max_norm=None)
    d = aggregator(G)
    if cls in (balancing.GradDrop, balancing.DBMTL):
        return  # element-wise masking / weights on the moving averages, not on G
    assert aggregator.weights is not None and aggregator.weights.shape == (4,)
    torch.testing.assert_close(d, aggregator.weights @ G)


def test_stateful_flags() -> None:
    stateful = {cls.__name__ for cls in AGGREGATORS if cls.stateful}
    assert stateful == {"GradVac", "NashMTL", "DBMTL"}
    assert balancing.DBMTL().needs_state


@pytest.mark.parametrize("cls", [balancing.GradVac, balancing.NashMTL, balancing.DBMTL])
def test_stateful_methods_reject_a_new_number_of_tasks_until_reset(cls: type[GradientAggregator]) -> None:
    aggregator = cls()
    aggregator(torch.randn(3, 6))
    with pytest.raises(ValueError, match=r"reset\(\)"):
        aggregator(torch.randn(2, 6))
    aggregator.reset()
    assert aggregator(torch.randn(2, 6)).shape == (6,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", AGGREGATORS, ids=IDS)
def test_the_direction_stays_on_the_gradients_device(cls: type[GradientAggregator]) -> None:
    G = torch.randn(3, 16, device="cuda")
    d = cls()(G)
    assert d.device == G.device and d.dtype == G.dtype and torch.isfinite(d).all()


@pytest.mark.parametrize("cls", [c for c in AGGREGATORS if c.weighted], ids=lambda c: c.__name__)
def test_weighted_methods_return_exactly_their_weights_times_G(cls: type[GradientAggregator]) -> None:
    G = torch.randn(3, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    aggregator = cls()
    for _ in range(2):  # stateful methods: their second call too
        direction = aggregator(G, torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
        torch.testing.assert_close(aggregator.weights.to(G) @ G, direction)


def test_nonfinite_rows_screen_is_exact() -> None:
    big = torch.finfo(torch.float32).max
    G = torch.zeros(4, 3)
    G[0] = torch.tensor([big, big, 0.0])  # finite entries whose sum overflows: not flagged
    G[1, 1] = float("nan")
    G[2] = torch.tensor([float("inf"), float("-inf"), 1.0])  # sums to NaN
    G[3, 2] = float("-inf")
    assert nonfinite_rows(G) == [1, 2, 3]
    assert nonfinite_rows(torch.randn(3, 5)) == []
