"""Δm (LibMTL's definition) on hand-computed numbers."""

import pytest

from mtl.delta_m import delta_m, task_deltas


def test_delta_m_by_hand() -> None:
    # a: accuracy 0.80 -> 0.88 (+10 %), b: error 2.0 -> 1.5 (lower is better: +25 %) and
    # accuracy 0.5 -> 0.45 (-10 %), averaged within b first: +7.5 %. Δm = (10 + 7.5) / 2 = 8.75 %.
    results = {"a": {"acc": 0.88}, "b": {"err": 1.5, "acc": 0.45}}
    baselines = {"a": {"acc": 0.80}, "b": {"err": 2.0, "acc": 0.5}}
    hib = {"a": {"acc": True}, "b": {"err": False, "acc": True}}
    assert task_deltas(results, baselines, hib) == pytest.approx({"a": 10.0, "b": 7.5})
    assert delta_m(results, baselines, hib) == pytest.approx(8.75)


def test_delta_m_is_zero_against_itself() -> None:
    scores = {"a": {"auroc": 0.9}, "b": {"mse": 0.3}}
    assert delta_m(scores, scores, {"a": {"auroc": True}, "b": {"mse": False}}) == 0.0


@pytest.mark.parametrize(
    ("baselines", "hib", "error", "match"),
    [
        ({}, {"a": {"acc": True}}, KeyError, "baseline for task `a`"),
        ({"a": {"f1": 0.5}}, {"a": {"acc": True}}, KeyError, "metric `acc`"),
        ({"a": {"acc": 0.0}}, {"a": {"acc": True}}, ValueError, "non-zero baseline"),
        ({"a": {"acc": 0.5}}, {"a": {}}, KeyError, "direction of `acc`"),
    ],
)
def test_delta_m_bad_input(baselines, hib, error, match) -> None:
    with pytest.raises(error, match=match):
        delta_m({"a": {"acc": 0.6}}, baselines, hib)
