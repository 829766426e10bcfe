"""Data maps (Swayamdipta et al., 2020) and STG-MTL clustering (Sherif et al., 2023) against hand values."""

from __future__ import annotations

import math

import pytest
import torch

from mtl.grouping import DataMapAffinity, data_map, feature_similarity, fuzzy_memberships, kmeans
from mtl.grouping.confidence import check_head, target_scale, true_label_probability
from mtl.heads import (
    BinaryHead,
    ClassificationHead,
    MultiLabelHead,
    RegressionHead,
    TokenClassificationHead,
)
from tests.grouping.test_affinity import fit, toy_module
from tests.toy import ToySource

LN3 = math.log(3.0)


# ----------------------------------------------------------------------------------- data maps
def test_confidence_and_variability_of_hand_made_probabilities() -> None:
    """Example 0 goes 0.2, 0.4, 0.6, 0.8: mean 0.5, population variance (0.09 + 0.01) * 2 / 4 = 0.05."""
    p = torch.tensor([[0.2, 0.9], [0.4, 0.9], [0.6, 0.9], [0.8, 0.9]])
    confidence, variability = data_map(p)
    assert torch.allclose(confidence, torch.tensor([0.5, 0.9], dtype=torch.float64))
    assert torch.allclose(variability, torch.tensor([math.sqrt(0.05), 0.0], dtype=torch.float64))
    one_epoch = data_map(torch.tensor([[0.3, 0.7]]))
    assert torch.allclose(one_epoch[1], torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least one epoch"):
        data_map(torch.zeros(0, 3))


def test_true_label_probability_of_classification_heads() -> None:
    logits = torch.tensor([[0.0, LN3], [0.0, LN3]])  # softmax (1/4, 3/4)
    p = true_label_probability(ClassificationHead(num_classes=2), logits, torch.tensor([1, 0]))
    assert torch.allclose(p, torch.tensor([0.75, 0.25], dtype=torch.float64))
    p = true_label_probability(BinaryHead(), torch.tensor([LN3, LN3, 0.0]), torch.tensor([1, 0, 0]))
    assert torch.allclose(p, torch.tensor([0.75, 0.25, 0.5], dtype=torch.float64))
    # Multi-label: the mean over the row's labelled entries (-100: missing).
    logits = torch.tensor([[LN3, 0.0], [LN3, 0.0]])
    p = true_label_probability(MultiLabelHead(num_labels=2), logits, torch.tensor([[1, 0], [0, -100]]))
    assert torch.allclose(p, torch.tensor([0.625, 0.25], dtype=torch.float64))


def test_regression_confidence_is_the_gaussian_likelihood_ratio() -> None:
    scale = torch.tensor([2.0])
    p = true_label_probability(
        RegressionHead(), torch.tensor([1.0, 3.0, 5.0]), torch.tensor([1.0, 1.0, 1.0]), scale
    )
    assert torch.allclose(p, torch.tensor([1.0, math.exp(-0.5), math.exp(-2.0)], dtype=torch.float64))
    two = RegressionHead(num_outputs=2)
    p = true_label_probability(
        two, torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, float("nan")]]), torch.tensor([1.0, 5.0])
    )
    assert torch.allclose(p, torch.tensor([math.exp(-0.5)], dtype=torch.float64))  # NaN output left out
    with pytest.raises(ValueError, match="Expected `scale`"):
        true_label_probability(RegressionHead(), torch.zeros(2), torch.zeros(2))


def test_target_scale() -> None:
    assert torch.allclose(target_scale(torch.tensor([1.0, 3.0, float("nan")])), torch.tensor([1.0]).double())
    assert torch.equal(
        target_scale(torch.tensor([[2.0, 0.0], [2.0, 2.0]])), torch.tensor([1.0, 1.0]).double()
    )


def test_heads_without_a_true_label_probability_are_refused() -> None:
    with pytest.raises(ValueError, match=r"task `ner`.*TokenClassificationHead.*`tag` or `cosine`"):
        check_head(TokenClassificationHead(num_labels=3), "ner")


# ----------------------------------------------------------------------------------- clustering
def test_fuzzy_memberships_by_hand() -> None:
    """Distances 1 and 2 to the centroids: m = 2 gives u ∝ d^-2, (0.8, 0.2); m = 3 gives u ∝ d^-1."""
    centroids = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    points = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.5, 0.0]])
    u = fuzzy_memberships(points, centroids, fuzziness=2.0)
    expected = torch.tensor([[0.8, 0.2], [0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    assert torch.allclose(u, expected)
    u3 = fuzzy_memberships(points[:1], centroids, fuzziness=3.0)
    assert torch.allclose(u3, torch.tensor([[2 / 3, 1 / 3]], dtype=torch.float64))
    with pytest.raises(ValueError, match="Expected `fuzziness`"):
        fuzzy_memberships(points, centroids, fuzziness=1.0)


def test_kmeans_and_memberships_recover_two_obvious_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(4, 5, generator=gen) * 0.1, 10 + torch.randn(3, 5, generator=gen) * 0.1])
    centroids, labels = kmeans(points, 2)
    assert labels[:4].unique().numel() == 1 and labels[4:].unique().numel() == 1 and labels[0] != labels[4]
    for m in (1.07, 2.0):
        u = fuzzy_memberships(points, centroids, m)
        assert torch.allclose(u.sum(dim=1), torch.ones(7, dtype=torch.float64))
        assert (u.argmax(dim=1) == labels).all() and u.max(dim=1).values.min() > 0.99
    with pytest.raises(ValueError, match=r"Expected `k` to be a number of clusters in \[1, 7\]"):
        kmeans(points, 8)


def test_feature_similarity_uses_the_median_squared_distance() -> None:
    """Squared distances 1, 9, 4; the median off-diagonal one is 4."""
    A = feature_similarity(torch.tensor([[0.0], [1.0], [3.0]]))
    e = math.exp
    expected = torch.tensor(
        [[1.0, e(-1 / 4), e(-9 / 4)], [e(-1 / 4), 1.0, e(-1)], [e(-9 / 4), e(-1), 1.0]], dtype=torch.float64
    )
    assert torch.allclose(A, expected)
    assert torch.equal(feature_similarity(torch.ones(2, 3)), torch.ones(2, 2, dtype=torch.float64))


# ----------------------------------------------------------------------------------- the callback
def test_callback_records_the_model_probabilities_every_epoch() -> None:
    callback = DataMapAffinity(probe_size=24)
    module = toy_module()
    fit(callback, module=module, epochs=3)
    assert callback.aligned and callback.measurements == 3
    rows = callback.probe_rows("cls")
    assert len(rows) == 24 and all(torch.equal(callback.probe_rows(t), rows) for t in ("reg", "bin"))
    probabilities = callback.probabilities()
    assert all(p.shape == (3, 24) for p in probabilities.values())
    # The last epoch's record is the final model's probabilities, recomputed here by hand.
    data = ToySource(n=64).load()
    x = data["cls"].train.inputs[rows]
    module.eval()
    with torch.no_grad():
        out = {k: v.double() for k, v in module(x).items()}
    y = {t: data[t].train.targets[rows] for t in data}
    by_hand = {
        "cls": out["cls"].softmax(-1)[torch.arange(24), y["cls"]],
        "bin": torch.where(y["bin"] == 1, out["bin"].sigmoid(), 1 - out["bin"].sigmoid()),
        "reg": torch.exp(-0.5 * ((out["reg"] - y["reg"]) / y["reg"].double().std(correction=0)) ** 2),
    }
    for task, expected in by_hand.items():
        assert torch.allclose(probabilities[task][-1], expected, atol=1e-6), task
    features = callback.features()
    assert features.shape == (3, 48)
    confidence, variability = callback.data_map()["cls"]
    assert torch.allclose(features[0], torch.cat([confidence, variability]))
    A = callback.affinity()
    assert torch.allclose(A, A.T) and torch.allclose(A.diagonal(), torch.ones(3, dtype=torch.float64))
    u = callback.memberships(2)
    assert u.shape == (3, 2) and torch.allclose(u.sum(dim=1), torch.ones(3, dtype=torch.float64))
    assert callback.clusters(2).shape == (3,)


def test_tasks_with_their_own_examples_get_quantile_features() -> None:
    callback = DataMapAffinity(probe_size=16, num_quantiles=4)
    fit(callback, source=ToySource(n=64, sizes=[64, 48, 64]), epochs=2)
    assert not callback.aligned
    assert [len(callback.probe_rows(t)) for t in ("cls", "reg", "bin")] == [16, 16, 16]
    assert callback.features().shape == (3, 8)
    confidence, _ = callback.data_map()["reg"]
    levels = (torch.arange(4, dtype=torch.float64) + 0.5) / 4
    assert torch.allclose(callback.features()[1, :4], confidence.quantile(levels))
    with pytest.raises(ValueError, match="features='quantiles'"):
        fit(DataMapAffinity(features="examples"), source=ToySource(n=64, sizes=[64, 48, 64]), epochs=1)


def test_from_directory_needs_the_saved_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"datamap\.pt"):
        DataMapAffinity.from_directory(tmp_path)


def test_probes_skip_missing_labels_and_state_round_trips() -> None:
    callback = DataMapAffinity(probe_size=1000)  # more than there are: every row labelled for all tasks
    fit(callback, source=ToySource(n=64, missing_every=4), epochs=1)
    assert len(callback.probe_rows("cls")) == 48 and (callback.probe_rows("cls") % 4 != 0).all()
    restored = DataMapAffinity()
    restored.load_state_dict(callback.state_dict())
    assert restored.aligned and torch.equal(restored.affinity(), callback.affinity())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"probe_size": 0}, "probe_size"),
        ({"num_quantiles": 1.5}, "num_quantiles"),
        ({"fuzziness": 1.0}, "fuzziness"),
        ({"features": "pixels"}, "features"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DataMapAffinity(**kwargs)
