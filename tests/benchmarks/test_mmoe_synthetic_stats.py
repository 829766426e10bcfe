"""The paired statistics of `benchmarks/mmoe_synthetic.py` against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.mmoe_synthetic import (
    MODELS,
    bootstrap_median_ci,
    contrasts,
    finding,
    load,
    paired_statistics,
    regime,
    sign_test,
    sine_parameters,
    verdict,
)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0] * 9 + [-1.0], 2 * (1 + 10) / 1024),  # P(X <= 1) + P(X >= 9) under Binomial(10, 1/2)
        ([2.0, 3.0, 0.5, 1.0, 4.0], 2 / 32),
        ([0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0], 2 / 32),  # zeros are dropped
        ([1.0, -1.0], 1.0),
        ([0.0, 0.0], 1.0),
        ([], 1.0),
    ],
)
def test_sign_test_matches_the_binomial_tail(values: list[float], expected: float) -> None:
    assert sign_test(values) == pytest.approx(expected)
    assert sign_test([-v for v in values]) == pytest.approx(expected)  # two-sided


def test_bootstrap_interval_of_a_constant_sample_is_that_constant() -> None:
    assert bootstrap_median_ci([0.3] * 7) == pytest.approx((0.3, 0.3))


def test_bootstrap_interval_of_two_values_spans_them() -> None:
    # Resampled medians of {a, b}: a and b with probability 1/4 each, (a + b) / 2 with 1/2.
    assert bootstrap_median_ci([-1.0, 5.0], level=0.95) == pytest.approx((-1.0, 5.0))
    assert bootstrap_median_ci([-1.0, 5.0], level=0.4) == pytest.approx((2.0, 2.0))


def test_bootstrap_interval_follows_the_median_distribution_of_three_values() -> None:
    # Medians of 3 draws from {0, 1, 2}: P(0) = P(2) = 7/27 ~ 0.26, P(1) = 13/27. The 30 % and 70 %
    # quantiles therefore both fall on 1, the 2.5 % and 97.5 % quantiles on 0 and 2.
    assert bootstrap_median_ci([0.0, 1.0, 2.0], level=0.4) == pytest.approx((1.0, 1.0))
    assert bootstrap_median_ci([0.0, 1.0, 2.0], level=0.95) == pytest.approx((0.0, 2.0))
    assert bootstrap_median_ci([0.0, 1.0, 2.0], seed=3) == bootstrap_median_ci([0.0, 1.0, 2.0], seed=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": []}, "Expected `values`"),
        ({"values": [1.0], "level": 1.0}, "Expected `level`"),
        ({"values": [1.0], "resamples": 0}, "Expected `resamples`"),
    ],
)
def test_bootstrap_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap_median_ci(**kwargs)


def test_paired_statistics_by_hand() -> None:
    stats = paired_statistics([1.0, 2.0, 3.0, 4.0, -1.0])
    assert stats["n"] == 5
    assert stats["mean"] == pytest.approx(1.8)
    assert stats["se"] == pytest.approx(math.sqrt(3.7) / math.sqrt(5))  # sample variance 14.8 / 4
    assert stats["median"] == 2.0
    assert (stats["positive"], stats["negative"]) == (4, 1)
    assert stats["sign_test_p"] == pytest.approx(2 * (1 + 5) / 32)
    low, high = stats["median_ci95"]
    assert -1.0 <= low <= 2.0 <= high <= 4.0


@pytest.mark.parametrize(
    ("ci", "p", "expected", "answer"),
    [
        ((0.1, 0.3), 0.01, ">0", "yes"),
        ((0.1, 0.3), 0.2, ">0", "unresolved"),  # a bootstrap interval alone is not enough
        ((-0.3, -0.1), 0.01, ">0", "opposite"),
        ((-0.1, 0.3), 0.01, ">0", "unresolved"),
        ((-0.1, 0.3), 1.0, "=0", "yes"),
        ((0.1, 0.3), 1.0, "=0", "no"),
    ],
)
def test_verdict(ci: tuple[float, float], p: float, expected: str, answer: str) -> None:
    assert verdict({"median_ci95": list(ci), "sign_test_p": p}, expected) == answer


def test_contrasts_recover_planted_effects() -> None:
    # MMoE 0.1 everywhere; OMoE equal to MMoE at p = 1 and worse by 0.02 (s + 1) at p = 0.5; shared-
    # bottom 0.3 everywhere. MMoE's advantage over OMoE grows by 0.02 (s + 1), over shared-bottom by 0.
    def loss(p: float, model: str, seed: int) -> float:
        if model == "OMoE" and p == 0.5:
            return 0.1 + 0.02 * (seed + 1)
        return 0.3 if model == "shared-bottom" else 0.1

    runs = [
        {"p": p, "model": m, "seed": s, "train_loss_mean": loss(p, m, s)}
        for p in (0.5, 1.0)
        for m in MODELS
        for s in range(6)
    ]
    found = {r["statistic"]: r for r in contrasts(runs, "train")}
    grows = found["[L_OMoE - L_MMoE](p=0.5) - [L_OMoE - L_MMoE](p=1.0)"]
    assert grows["mean"] == pytest.approx(0.07)
    assert grows["median"] == pytest.approx(0.07)
    assert (grows["positive"], grows["negative"]) == (6, 0)
    assert grows["sign_test_p"] == pytest.approx(2 / 64)
    assert grows["verdict"] == "yes"
    flat = found["[L_shared-bottom - L_MMoE](p=0.5) - [L_shared-bottom - L_MMoE](p=1.0)"]
    assert flat["median"] == pytest.approx(0.0) and flat["verdict"] == "unresolved"
    assert found["L_OMoE(p=1.0) - L_MMoE(p=1.0)"]["verdict"] == "yes"
    assert found["L_shared-bottom(p=0.5) - L_MMoE(p=0.5)"]["mean"] == pytest.approx(0.2)


def test_one_seed_gives_the_same_inputs_and_task_t0_at_every_correlation() -> None:
    sines = sine_parameters(10, seed=0)
    a, b = load(0.5, 3, 40, 10, sines), load(1.0, 3, 40, 10, sines)
    assert np.array_equal(a.x_train.numpy(), b.x_train.numpy())
    assert np.array_equal(a.y_test["t0"].numpy(), b.y_test["t0"].numpy())
    assert not np.array_equal(a.y_train["t1"].numpy(), b.y_train["t1"].numpy())
    # At p = 1 both weight vectors are c u_1 and only the label noise (std 0.1) separates the tasks.
    gap = (b.y_train["t0"] - b.y_train["t1"]).std().item()
    assert gap == pytest.approx(0.1 * math.sqrt(2), rel=0.3)


def _runs(loss) -> list[dict]:
    return [
        {"p": p, "model": m, "seed": s, "train_loss_mean": loss(p, m, s), "test_loss_mean": loss(p, m, s)}
        for p in (0.5, 1.0)
        for m in MODELS
        for s in range(8)
    ]


def test_finding_reports_a_planted_trend_as_reproduced() -> None:
    # OMoE and both shared-bottoms lose 0.01 (s + 1) at p = 0.5; MMoE is unaffected.
    def loss(p: float, model: str, seed: int) -> float:
        return 0.1 + (0.01 * (seed + 1) if p == 0.5 and model != "MMoE" else 0.0)

    text = finding({m: contrasts(_runs(loss), m) for m in ("train", "test")})
    assert text.count("the paper's finding is reproduced") == 2
    assert "no degradation" not in text


def test_finding_explains_a_missing_trend_by_a_missing_degradation() -> None:
    # Only the 16-unit shared-bottom suffers at p = 0.5; the compared models do not depend on p.
    def loss(p: float, model: str, seed: int) -> float:
        return 0.1 + (0.01 * (seed + 1) if p == 0.5 and model == "shared-bottom-16" else 0.0)

    text = finding({m: contrasts(_runs(loss), m) for m in ("train", "test")})
    assert text.count("the paper's finding is not reproduced") == 2
    assert text.count("no degradation for MMoE's gates to prevent") == 2
    assert text.count("16 shared units at lower p: worse") == 2


def test_regime_flags_overfitting_when_the_small_model_generalises_better() -> None:
    def row(model: str, train: float, test: float) -> dict:
        return {"model": model, "parameters": 1906, "train": {"mean": train}, "test": {"mean": test}}

    rows = [row("MMoE", 0.007, 0.030), row("OMoE", 0.008, 0.029), row("shared-bottom", 0.010, 0.031)]
    assert "MMoE 0.0070-0.0070 / 0.0300-0.0300" in regime(rows)
    assert "overfitting" not in regime(rows)
    assert "1,906-parameter shared-bottom-16 has a lower test loss" in regime(
        [*rows, row("shared-bottom-16", 0.016, 0.02)]
    )
    assert "overfitting" not in regime([*rows, row("shared-bottom-16", 0.016, 0.0295)])
