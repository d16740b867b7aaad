"""sparsenet.prune: pruning criteria and schedules on hand-computed arrays;
whole-model pruning, sensitivity analysis and dead-neuron removal on small
models whose answers are known (removal is checked against the original
model's outputs)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sparsenet
from sparsenet import AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Model, ReLU, Softmax
from sparsenet.errors import ModelError, WeightError
from sparsenet.prune import (PolynomialDecay, SensitivityResult, apply_masks, density, model_weights,
                             polynomial_decay, prune_by_rate, prune_by_std, prune_by_threshold, prune_globally_by_rate,
                             prune_model, remove_dead_neurons, sensitivity, with_weights)

from conftest import reference_forward

F32 = np.float32


def weighted(model: Model) -> dict:
    return {layer.name: layer for layer in model.layers if isinstance(layer, (Linear, Conv2d))}


# ------------------------------------------------------------------ masks
def test_prune_by_threshold_keeps_strictly_larger_magnitudes():
    w = np.array([[0.5, -0.1], [0.2, -0.3]], F32)
    np.testing.assert_array_equal(prune_by_threshold(w, 0.2), [[True, False], [False, True]])
    mask = np.array([[False, True], [True, True]])
    np.testing.assert_array_equal(prune_by_threshold(w, 0.0, mask), [[False, True], [True, True]])


def test_prune_by_std_uses_the_surviving_weights():
    w = np.array([1, -2, 3, -4], F32)
    # std of [1, -2, 3, -4]: mean -0.5, variance (2.25 + 2.25 + 12.25 + 12.25) / 4 = 7.25
    assert math.isclose(math.sqrt(7.25), 2.6925824, rel_tol=1e-7)
    np.testing.assert_array_equal(prune_by_std(w, 1.0), [False, False, True, True])
    # Survivors [1, -2, 3]: mean 2/3, variance 114 / 27, std 2.0548; quality 0.5 -> threshold 1.0274.
    assert math.isclose(math.sqrt(114 / 27), 2.0548046, rel_tol=1e-7)
    mask = np.array([True, True, True, False])
    np.testing.assert_array_equal(prune_by_std(w, 0.5, mask), [False, True, True, False])
    # Quality 0.45: 0.925 over the survivors keeps the 1; 1.212 over all four would not.
    np.testing.assert_array_equal(prune_by_std(w, 0.45, mask), [True, True, True, False])
    np.testing.assert_array_equal(prune_by_std(w, 0.45), [False, True, True, True])


def test_prune_by_std_quality_boundaries():
    w = np.array([1, -2, 3, -4], F32)
    std = math.sqrt(7.25)
    np.testing.assert_array_equal(prune_by_std(w, 1 / std * 0.999), [True, True, True, True])
    np.testing.assert_array_equal(prune_by_std(w, 1 / std * 1.001), [False, True, True, True])
    np.testing.assert_array_equal(prune_by_std(w, 0.0), [True, True, True, True])


def test_prune_by_rate_smallest_first_ties_by_index():
    w = np.array([0.3, -0.1, 0.2, 0.1, -0.4, 0.0], F32)
    np.testing.assert_array_equal(prune_by_rate(w, 2 / 6), [True, False, True, True, True, False])
    np.testing.assert_array_equal(prune_by_rate(w, 3 / 6), [True, False, True, False, True, False])
    np.testing.assert_array_equal(prune_by_rate(w, 0.0), np.ones(6, bool))
    np.testing.assert_array_equal(prune_by_rate(w, 1.0), np.zeros(6, bool))


def test_prune_by_rate_never_revives_and_counts_masked_first():
    w = np.array([0.3, -0.1, 0.2, 0.1, -0.4, 0.0], F32)
    mask = np.array([False, True, True, True, True, True])  # the largest weight was pruned before
    keep = prune_by_rate(w, 0.5, mask)
    np.testing.assert_array_equal(keep, [False, False, True, True, True, False])
    assert not (keep & ~mask).any()
    already = np.array([False, False, True, True, True, False])
    out = prune_by_rate(w, 0.2, already)  # 1 to prune, 3 already are
    np.testing.assert_array_equal(out, already)
    assert out is not already


def test_prune_by_rate_exact_count(rng):
    w = rng.standard_normal((10, 10)).astype(F32)
    keep = prune_by_rate(w, 0.37)
    assert (~keep).sum() == 37
    assert np.abs(w[~keep]).max() <= np.abs(w[keep]).min()


def test_prune_globally_by_rate_one_threshold():
    weights = {"a": np.array([10, 20, 30, 40], F32), "b": np.array([1, 2], F32)}
    masks = prune_globally_by_rate(weights, 0.5)
    np.testing.assert_array_equal(masks["a"], [False, True, True, True])
    np.testing.assert_array_equal(masks["b"], [False, False])
    assert sum(int((~m).sum()) for m in masks.values()) == 3
    previous = {"a": np.array([True, True, True, False])}
    masks = prune_globally_by_rate(weights, 0.5, previous)  # a's 40 is pruned already, then 1 and 2
    np.testing.assert_array_equal(masks["a"], [True, True, True, False])
    np.testing.assert_array_equal(masks["b"], [False, False])
    assert prune_globally_by_rate({}, 0.5) == {}


def test_density_and_apply_masks():
    assert density(np.array([[0, 1], [2, 0]])) == 0.5
    assert density(np.array([True, False, False, False])) == 0.25
    assert density(np.zeros((0, 3))) == 0.0
    weights = {"a": np.array([1, -2, 3], np.float64), "b": np.array([4, 5], F32)}
    out = apply_masks(weights, {"a": np.array([True, False, True])})
    np.testing.assert_array_equal(out["a"], [1, 0, 3])
    np.testing.assert_array_equal(out["b"], [4, 5])
    assert out["a"].dtype == F32 and out["b"].dtype == F32
    assert out["b"] is not weights["b"]


@pytest.mark.parametrize("call, match", [
    (lambda w: prune_by_rate(np.array([1.0, np.nan]), 0.5, name="fc1"), "fc1.*non-finite"),
    (lambda w: prune_by_threshold(w, 0.1, np.ones(3, bool), name="fc1"), r"fc1.*mask of shape \(3,\).*\(2, 2\)"),
    (lambda w: prune_by_std(w, 1.0, np.ones((2, 3), bool), name="fc1"), r"fc1.*\(2, 3\)"),
    (lambda w: prune_by_rate(w, 1.5, name="fc1"), r"fc1.*1\.5.*outside \[0, 1\]"),
    (lambda w: prune_by_rate(w, -0.1, name="fc1"), r"fc1.*-0\.1"),
    (lambda w: prune_by_threshold(w, -0.5, name="fc1"), r"fc1.*threshold -0\.5"),
    (lambda w: prune_by_std(w, -1, name="fc1"), r"fc1.*quality"),
    (lambda w: prune_by_rate(np.array(["a", "b"]), 0.5, name="fc1"), r"fc1.*dtype"),
    (lambda w: prune_globally_by_rate({"fc1": w, "fc2": np.array([np.inf])}, 0.5), "fc2"),
    (lambda w: prune_globally_by_rate({"fc1": w}, 2.0), "outside"),
    (lambda w: apply_masks({"fc1": w}, {"fc1": np.ones(4, bool)}), "fc1"),
])
def test_bad_pruning_input_names_the_layer(call, match):
    with pytest.raises(WeightError, match=match):
        call(np.ones((2, 2), F32))


# --------------------------------------------------------------- schedule
def test_polynomial_decay_closed_form():
    assert polynomial_decay(0, 0.1, 0.9, 0, 100) == pytest.approx(0.1)
    assert polynomial_decay(50, 0.0, 0.8, 0, 100) == pytest.approx(0.7)  # 0.8 - 0.8 / 8
    assert polynomial_decay(100, 0.1, 0.9, 0, 100) == pytest.approx(0.9)
    assert polynomial_decay(250, 0.1, 0.9, 0, 100) == pytest.approx(0.9)
    assert polynomial_decay(5, 0.1, 0.9, 10, 110) == pytest.approx(0.1)  # before begin
    for step in (10, 23, 60, 97, 110):
        p = (step - 10) / 100
        assert polynomial_decay(step, 0.2, 0.95, 10, 110, power=3) == pytest.approx(0.95 + (0.2 - 0.95) * (1 - p) ** 3)
    assert polynomial_decay(50, 0.0, 0.8, 0, 100, power=1) == pytest.approx(0.4)
    with pytest.raises(WeightError, match="end_step"):
        polynomial_decay(0, 0.0, 0.5, 10, 10)


def test_polynomial_decay_schedule_dicts():
    schedule = PolynomialDecay(0.1, {"fc1": 0.9, "fc2": 0.5}, begin_step=0, end_step=100)
    assert schedule.sparsity(0) == pytest.approx({"fc1": 0.1, "fc2": 0.1})
    assert schedule.sparsity(50) == pytest.approx({"fc1": 0.9 - 0.8 / 8, "fc2": 0.5 - 0.4 / 8})
    assert schedule.sparsity(1000) == pytest.approx({"fc1": 0.9, "fc2": 0.5})
    start_per_layer = PolynomialDecay({"fc1": 0.0, "fc2": 0.2}, 0.6, begin_step=0, end_step=100)
    assert start_per_layer.sparsity(50) == pytest.approx({"fc1": 0.6 - 0.6 / 8, "fc2": 0.6 - 0.4 / 8})
    both = PolynomialDecay({"fc1": 0.0}, {"fc1": 0.8}, begin_step=0, end_step=100)
    assert both.sparsity(100) == pytest.approx({"fc1": 0.8})
    assert PolynomialDecay(0.0, 0.5, 0, 10).sparsity(10) == pytest.approx(0.5)


def test_polynomial_decay_should_prune():
    schedule = PolynomialDecay(0.0, 0.8, begin_step=10, end_step=100, frequency=20)
    pruning = [step for step in range(0, 120) if schedule.should_prune(step)]
    assert pruning == [10, 30, 50, 70, 90, 100]
    assert schedule(30) == (True, pytest.approx(schedule.sparsity(30)))
    assert schedule(31)[0] is False
    assert "PolynomialDecay" in repr(schedule)


@pytest.mark.parametrize("kwargs, match", [
    ({"begin_step": 10, "end_step": 10}, "begin_step"),
    ({"begin_step": -1, "end_step": 10}, "begin_step"),
    ({"frequency": 0}, "frequency"),
    ({"power": 0}, "power"),
    ({"final_sparsity": 1.5}, "final_sparsity 1.5"),
    ({"final_sparsity": {"fc1": -0.1}}, "fc1"),
    ({"initial_sparsity": {"fc1": 0.0}, "final_sparsity": {"fc2": 0.5}}, "differ"),
])
def test_polynomial_decay_bad_arguments(kwargs, match):
    arguments = {"initial_sparsity": 0.0, "final_sparsity": 0.5, "begin_step": 0, "end_step": 100, **kwargs}
    with pytest.raises(WeightError, match=match):
        PolynomialDecay(**arguments)


# ----------------------------------------------------------- whole models
@pytest.fixture(scope="module")
def lenet5() -> Model:
    return sparsenet.models.lenet5(seed=0, backend="sparse")


def test_model_weights_and_with_weights_round_trip(lenet5):
    weights = model_weights(lenet5)
    assert list(weights) == ["conv1", "conv2", "fc1", "fc2"]
    assert weights["conv1"][0].shape == (20, 1, 5, 5) and weights["fc1"][0].shape == (500, 800)
    assert all(w.dtype == F32 and b is not None and b.shape == (w.shape[0],) for w, b in weights.values())
    weights["fc2"][1][:] = 99  # a copy: the model keeps its bias
    assert not (weighted(lenet5)["fc2"].bias == 99).any()
    copy = with_weights(lenet5, {})
    assert copy is not lenet5
    assert [l.name for l in copy.layers] == [l.name for l in lenet5.layers]
    assert (copy.name, copy.input_shape, copy.backend) == ("lenet5", (1, 28, 28), "sparse")
    x = np.random.default_rng(3).random((2, 1, 28, 28), dtype=F32)
    np.testing.assert_array_equal(copy(x), lenet5(x))
    assert with_weights(lenet5, {}, backend="dense").backend == "dense"


def test_with_weights_replaces_weight_and_bias():
    model = Model([Linear(np.ones((3, 2), F32), np.zeros(3, F32), name="fc1"), ReLU(),
                   Linear(np.ones((1, 3), F32), np.array([0.5], F32), name="fc2")], backend="sparse")
    x = np.array([[1.0, 2.0]], F32)
    assert model(x)[0, 0] == 9.5
    new = with_weights(model, {"fc1": 2 * np.ones((3, 2)), "fc2": (np.array([[1, 0, 0]], F32), None)})
    assert new(x)[0, 0] == 6.0
    assert weighted(new)["fc1"].bias is not None and weighted(new)["fc2"].bias is None
    assert model(x)[0, 0] == 9.5
    assert with_weights(model, {"fc2": (np.ones((1, 3)), [2])})(x)[0, 0] == 11.0


@pytest.mark.parametrize("weights, match", [
    ({"fc9": np.ones((3, 2))}, r"no Linear or Conv2d layer named 'fc9'.*fc1, fc2"),
    ({"relu1": np.ones((3, 2))}, "relu1"),
    ({"fc1": np.ones((2, 3))}, r"linear layer 'fc1'.*\(2, 3\).*\(3, 2\)"),
    ({"fc1": (np.ones((3, 2)), np.ones(2))}, r"fc1.*bias.*\(2,\).*\(3,\)"),
    ({"fc1": np.full((3, 2), np.nan)}, "fc1.*non-finite"),
    ({"fc1": (np.ones((3, 2)), np.ones(3), 1)}, "fc1.*3-tuple"),
])
def test_with_weights_errors(weights, match):
    model = Model([Linear(np.ones((3, 2), F32), name="fc1"), ReLU(), Linear(np.ones((1, 3), F32), name="fc2")])
    with pytest.raises(WeightError, match=match):
        with_weights(model, weights)


def test_prune_model_rate(lenet5):
    before = {name: layer.nnz for name, layer in weighted(lenet5).items()}
    pruned = prune_model(lenet5, 0.95)
    assert {name: layer.nnz for name, layer in weighted(pruned).items()} == \
        {"conv1": 25, "conv2": 1250, "fc1": 20000, "fc2": 250}
    assert {name: layer.nnz for name, layer in weighted(lenet5).items()} == before
    old, new = model_weights(lenet5), model_weights(pruned)
    for name in old:
        assert not (new[name][0] != 0)[old[name][0] == 0].any()  # nothing revived
        np.testing.assert_array_equal(new[name][1], old[name][1])  # biases untouched
    # Rates below a layer's sparsity change nothing (lenet5's conv2 is 88 % sparse).
    assert weighted(prune_model(lenet5, 0.5))["conv2"].nnz == before["conv2"]
    assert weighted(prune_model(lenet5, 0.5))["conv1"].nnz == 250


def test_prune_model_dicts_and_layers(lenet5):
    before = model_weights(lenet5)
    only_fc1 = model_weights(prune_model(lenet5, {"fc1": 0.99}))
    assert np.count_nonzero(only_fc1["fc1"][0]) == 4000
    for name in ("conv1", "conv2", "fc2"):
        np.testing.assert_array_equal(only_fc1[name][0], before[name][0])
    only_conv2 = weighted(prune_model(lenet5, 0.95, layers=["conv2"]))
    assert {name: layer.nnz for name, layer in only_conv2.items()} == \
        {"conv1": 330, "conv2": 1250, "fc1": 32000, "fc2": 950}
    assert weighted(prune_model(lenet5, {"fc1": 0.99, "fc2": 0.99}, layers="fc2"))["fc1"].nnz == 32000


def test_prune_model_std_threshold_global():
    w1 = np.array([[1, -2, 0, 3, -4]], F32).T.copy()  # (5, 1)
    w2 = np.array([[10, 20, 30, 40, 50]], F32)  # (1, 5)
    model = Model([Linear(w1, name="fc1"), ReLU(), Linear(w2, name="fc2")], backend="sparse", name="tiny")
    # std over the nonzeros [1, -2, 3, -4] is 2.69; quality 0.4 -> threshold 1.077 (with the zero: 0.967)
    std = model_weights(prune_model(model, {"fc1": 0.4}, method="std"))
    np.testing.assert_array_equal(std["fc1"][0][:, 0], [0, -2, 0, 3, -4])
    np.testing.assert_array_equal(std["fc2"][0], w2)
    threshold = model_weights(prune_model(model, {"fc1": 2.0, "fc2": 30.0}, method="threshold"))
    np.testing.assert_array_equal(threshold["fc1"][0][:, 0], [0, 0, 0, 3, -4])
    np.testing.assert_array_equal(threshold["fc2"][0], [[0, 0, 0, 40, 50]])
    # One threshold for both: 5 of 10 pruned, the zero first, then 1, 2, 3, 4.
    everything = model_weights(prune_model(model, 0.5, method="global"))
    np.testing.assert_array_equal(everything["fc1"][0], np.zeros((5, 1)))
    np.testing.assert_array_equal(everything["fc2"][0], w2)
    assert prune_model(model, 0.4, method="global", layers=["fc2"]).layers[2].nnz == 3


@pytest.mark.parametrize("amount, kwargs, match", [
    (0.5, {"method": "magnitude"}, "method 'magnitude'"),
    ({"fc1": 0.5}, {"method": "global"}, "global.*not a dict"),
    ({"fc9": 0.5}, {}, "fc9"),
    (0.5, {"layers": ["fc1", "relu1"]}, "relu1"),
    ({"fc1": 0.5}, {"layers": ["fc2"]}, "'fc2' is in layers but has no amount"),
    ({"fc1": 1.5}, {}, r"fc1.*1\.5"),
])
def test_prune_model_errors(amount, kwargs, match):
    model = Model([Linear(np.ones((3, 2), F32), name="fc1"), ReLU(), Linear(np.ones((1, 3), F32), name="fc2")])
    with pytest.raises(WeightError, match=match):
        prune_model(model, amount, **kwargs)


# ------------------------------------------------------------ sensitivity
def l1_model() -> Model:
    """fc1 magnitudes 1..12 (sum 78); fc2 magnitudes 0, 100..500 (sum 1500, one already pruned)."""
    w1 = (np.arange(1, 13, dtype=F32) * np.array([1, -1] * 6, F32)).reshape(3, 4)
    w2 = np.array([[0, -100, 200], [300, -400, 500]], F32)
    return Model([Linear(w1, np.zeros(3, F32), name="fc1"), ReLU(), Linear(w2, np.zeros(2, F32), name="fc2")],
                 backend="sparse", input_shape=(4,), name="l1")


def l1_norm(model: Model) -> float:
    return float(sum(np.abs(w).sum() for w, _ in model_weights(model).values()))


def test_sensitivity_known_answers():
    model = l1_model()
    calls = []
    lines = []

    def evaluate(m: Model) -> float:
        calls.append(m)
        return l1_norm(m)

    result = sensitivity(model, evaluate, rates=(0.9, 0.1, 0.5), progress=lines.append)
    assert result.rates == (0.1, 0.5, 0.9)
    assert result.baseline == 1578
    # fc1 loses its round(12 r) = 1, 6, 11 smallest: 1, 21, 66. fc2: round(6 r) = 1 (the zero), 3, 5.
    assert result.metrics == {"fc1": [1577, 1557, 1512], "fc2": [1578, 1278, 578]}
    assert result.parameters == {"fc1": 12, "fc2": 6}
    assert len(calls) == 1 + 3 + 2  # fc2 at 0.1 prunes nothing new: the baseline, unevaluated
    assert calls[0] is model and all(m is not model for m in calls[1:])
    assert l1_norm(model) == 1578
    assert len(lines) == 1 + 6 and "fc2" in lines[-1] and "0.9" in lines[-1]
    for metrics in result.metrics.values():
        assert metrics == sorted(metrics, reverse=True)  # magnitude pruning only removes L1 mass
    assert result.losses("fc1") == [1, 21, 66]
    assert result.suggest(0) == {"fc1": 0.0, "fc2": 0.1}
    assert result.suggest(21) == {"fc1": 0.5, "fc2": 0.1}
    assert result.suggest(300) == {"fc1": 0.9, "fc2": 0.5}
    assert result.suggest(1e9) == {"fc1": 0.9, "fc2": 0.9}
    only = sensitivity(model, l1_norm, rates=(0.5,), layers=["fc2"])
    assert only.metrics == {"fc2": [1278]} and only.parameters == {"fc2": 6}


def test_sensitivity_with_inference_accuracy(rng):
    w1 = rng.standard_normal((16, 8)).astype(F32)
    w2 = rng.standard_normal((4, 16)).astype(F32)
    b2 = np.array([0.0, 0.3, -0.2, 0.1], F32)
    model = Model([Linear(w1, np.zeros(16, F32), name="fc1"), ReLU(), Linear(w2, b2, name="fc2")], backend="sparse")
    x = rng.standard_normal((64, 8)).astype(F32)
    labels = model(x).argmax(axis=1)

    def accuracy(m: Model) -> float:
        return float((m(x).argmax(axis=1) == labels).mean())

    result = sensitivity(model, accuracy, rates=(0.2, 1.0))
    assert result.baseline == 1.0
    # fc2 fully pruned: the output is its bias everywhere, so the prediction is argmax(b2) = 1.
    assert result.metrics["fc2"][1] == float((labels == 1).mean())
    assert result.metrics["fc1"][1] == float((labels == int(np.argmax(b2))).mean())  # ReLU(0) = 0 into fc2
    assert all(0 <= m <= 1 for metrics in result.metrics.values() for m in metrics)
    np.testing.assert_array_equal(model(x).argmax(axis=1), labels)


def test_suggest_stops_at_the_first_rate_over_budget():
    result = SensitivityResult(baseline=1.0, rates=(0.1, 0.2, 0.3, 0.4), parameters={"a": 10, "b": 20},
                               metrics={"a": [0.99, 0.90, 0.98, 0.99], "b": [0.5, 0.4, 0.3, 0.2]})
    assert result.suggest(0.05) == {"a": 0.1, "b": 0.0}
    assert result.suggest(0.1) == {"a": 0.4, "b": 0.0}
    lower = SensitivityResult(baseline=0.2, rates=(0.1, 0.5), metrics={"a": [0.21, 0.3]}, parameters={"a": 4},
                              higher_is_better=False)
    assert lower.losses("a") == pytest.approx([0.01, 0.1])
    assert lower.suggest(0.05) == {"a": 0.1}
    with pytest.raises(WeightError, match="budget"):
        lower.suggest(-1)


def test_sensitivity_markdown():
    result = sensitivity(l1_model(), l1_norm, rates=(0.1, 0.5, 0.9))
    table = result.to_markdown()
    lines = table.splitlines()
    assert "1578" in lines[0] and "higher is better" in lines[0]
    assert lines[2] == "| layer | weights | 0.1 | 0.5 | 0.9 |"
    assert lines[4] == "| fc1 | 12 | 1577 | 1557 | 1512 |"
    assert lines[5] == "| fc2 | 6 | 1578 | 1278 | 578 |"
    assert len(lines) == 6


def test_sensitivity_plot(tmp_path):
    pytest.importorskip("matplotlib")
    result = sensitivity(l1_model(), l1_norm, rates=(0.1, 0.5, 0.9))
    path = result.plot(tmp_path / "sensitivity.png", title="L1 left")
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_sensitivity_errors():
    model = l1_model()
    with pytest.raises(WeightError, match="1.5"):
        sensitivity(model, l1_norm, rates=(0.5, 1.5))
    with pytest.raises(WeightError, match="fc9"):
        sensitivity(model, l1_norm, layers=["fc9"])
    with pytest.raises(ModelError, match="NaN"):
        sensitivity(model, lambda m: float("nan"))
    with pytest.raises(ModelError, match="not a number"):
        sensitivity(model, lambda m: "good")


# ------------------------------------------------------ dead-neuron removal
def mlp_with_dead_neurons(rng) -> Model:
    """fc1 (6 neurons): 0 is read only by fc2's neuron 2 (which fc3 never reads, so
    0 dies on the second pass); 1 is never read; 3 has no inputs and bias +0.7
    (folded into fc2's bias); 4 has no inputs and bias -0.5 (ReLU makes it 0)."""
    w1 = rng.standard_normal((6, 4)).astype(F32)
    w1[[3, 4]] = 0
    b1 = np.array([0.1, 0.2, 0.3, 0.7, -0.5, 0.4], F32)
    w2 = rng.standard_normal((4, 6)).astype(F32)
    w2[:, 1] = 0
    w2[:, 0] = 0
    w2[2, 0] = 1.5
    b2 = rng.standard_normal(4).astype(F32)
    w3 = rng.standard_normal((3, 4)).astype(F32)
    w3[:, 2] = 0
    b3 = rng.standard_normal(3).astype(F32)
    return Model([Linear(w1, b1, name="fc1"), ReLU(), Linear(w2, b2, name="fc2"), ReLU(), Dropout(0.5),
                  Linear(w3, b3, name="fc3")], backend="sparse", input_shape=(4,), name="mlp")


def test_remove_dead_neurons_mlp(rng):
    model = mlp_with_dead_neurons(rng)
    old = model_weights(model)
    x = rng.standard_normal((16, 4)).astype(F32)
    new, removed = remove_dead_neurons(model)
    assert removed == {"fc1": 4, "fc2": 1, "fc3": 0}
    layers = weighted(new)
    assert {name: layer.shape for name, layer in layers.items()} == {"fc1": (2, 4), "fc2": (3, 2), "fc3": (3, 3)}
    np.testing.assert_array_equal(layers["fc1"].weight.to_dense(), old["fc1"][0][[2, 5]])
    np.testing.assert_array_equal(layers["fc1"].bias, np.array([0.3, 0.4], F32))
    np.testing.assert_array_equal(layers["fc2"].weight.to_dense(), old["fc2"][0][np.ix_([0, 1, 3], [2, 5])])
    expected_b2 = (old["fc2"][1].astype(np.float64) + 0.7 * old["fc2"][0][:, 3])[[0, 1, 3]]
    np.testing.assert_allclose(layers["fc2"].bias, expected_b2, rtol=1e-7)
    np.testing.assert_array_equal(layers["fc3"].bias, old["fc3"][1])
    assert [l.name for l in new.layers] == [l.name for l in model.layers]
    assert (new.name, new.input_shape, new.backend) == ("mlp", (4,), "sparse")
    assert {name: layer.shape for name, layer in weighted(model).items()} == \
        {"fc1": (6, 4), "fc2": (4, 6), "fc3": (3, 4)}
    np.testing.assert_allclose(new(x), model(x), rtol=1e-6, atol=1e-6)
    again, none = remove_dead_neurons(new)
    assert none == {"fc1": 0, "fc2": 0, "fc3": 0}


def test_remove_unread_neurons_is_exact(rng):
    """Only neurons nobody reads: the outputs are bit-for-bit the same."""
    w1 = rng.standard_normal((5, 4)).astype(F32)
    w2 = rng.standard_normal((3, 5)).astype(F32)
    w2[:, [1, 3]] = 0
    w2[:, 4] = 0
    w2[0, 4] = 2.0  # neuron 4 of fc1 feeds only fc2's neuron 0, which fc3 ignores
    w3 = rng.standard_normal((2, 3)).astype(F32)
    w3[:, 0] = 0
    biases = [rng.standard_normal(n).astype(F32) for n in (5, 3, 2)]
    model = Model([Linear(w1, biases[0], name="fc1"), ReLU(), Dropout(), Linear(w2, biases[1], name="fc2"), ReLU(),
                   Linear(w3, biases[2], name="fc3")], backend="sparse")
    new, removed = remove_dead_neurons(model)
    assert removed == {"fc1": 3, "fc2": 1, "fc3": 0}
    assert [layer.shape for layer in weighted(new).values()] == [(2, 4), (2, 2), (2, 2)]
    x = rng.standard_normal((9, 4)).astype(F32)
    np.testing.assert_array_equal(new(x), model(x))


def conv_model(padding: int, rng) -> Model:
    """conv1 (5 channels): 0 never read; 2 has no inputs and bias +0.3; 3 has no inputs
    and bias -0.2; 4 read only by conv2's channel 1, which the Linear never reads."""
    w1 = rng.standard_normal((5, 2, 3, 3)).astype(F32)
    w1[[2, 3]] = 0
    b1 = np.array([0.1, 0.2, 0.3, -0.2, 0.05], F32)
    w2 = rng.standard_normal((3, 5, 3, 3)).astype(F32)
    w2[:, 0] = 0
    w2[:, 4] = 0
    w2[1, 4, 1, 1] = 0.8
    b2 = rng.standard_normal(3).astype(F32)
    spatial = 16 if padding else 4  # conv2 output 4x4 or 2x2 from the pooled 4x4 map
    w3 = rng.standard_normal((5, 3 * spatial)).astype(F32)
    w3[:, spatial:2 * spatial] = 0
    b3 = rng.standard_normal(5).astype(F32)
    return Model([Conv2d(w1, b1, name="conv1"), ReLU(), MaxPool2d(2), Conv2d(w2, b2, padding=padding, name="conv2"),
                  ReLU(), Flatten(), Linear(w3, b3, name="fc")], backend="sparse", input_shape=(2, 10, 10),
                 name="cnn")


def test_remove_dead_neurons_conv_unpadded_folds_bias(rng):
    model = conv_model(0, rng)
    old = model_weights(model)
    new, removed = remove_dead_neurons(model)
    assert removed == {"conv1": 4, "conv2": 1, "fc": 0}
    layers = weighted(new)
    assert {name: layer.shape for name, layer in layers.items()} == \
        {"conv1": (1, 2, 3, 3), "conv2": (2, 1, 3, 3), "fc": (5, 8)}
    expected_b2 = (old["conv2"][1] + 0.3 * old["conv2"][0][:, 2].astype(np.float64).sum(axis=(1, 2)))[[0, 2]]
    np.testing.assert_allclose(layers["conv2"].bias, expected_b2, rtol=1e-6)
    np.testing.assert_array_equal(layers["fc"].weight.to_dense(), old["fc"][0][:, np.r_[0:4, 8:12]])
    x = rng.standard_normal((3, 2, 10, 10)).astype(F32)
    np.testing.assert_allclose(new(x), model(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new(x), reference_forward(model.layers, x), rtol=1e-4, atol=1e-4)


def test_remove_dead_neurons_conv_padded_keeps_constant_channel(rng):
    model = conv_model(1, rng)
    new, removed = remove_dead_neurons(model)
    # Channel 2's constant ReLU(0.3) meets conv2's zero padding: kept. Channel 3's constant is 0: removed.
    assert removed == {"conv1": 3, "conv2": 1, "fc": 0}
    layers = weighted(new)
    assert {name: layer.shape for name, layer in layers.items()} == \
        {"conv1": (2, 2, 3, 3), "conv2": (2, 2, 3, 3), "fc": (5, 32)}
    np.testing.assert_array_equal(layers["conv1"].bias, np.array([0.2, 0.3], F32))
    np.testing.assert_array_equal(layers["conv2"].bias, weighted(model)["conv2"].bias[[0, 2]])
    x = rng.standard_normal((3, 2, 10, 10)).astype(F32)
    np.testing.assert_array_equal(new(x), model(x))


@pytest.mark.parametrize("count_include_pad, removed", [(True, 0), (False, 1)])
def test_remove_dead_neurons_avgpool_padding(rng, count_include_pad, removed):
    w1 = rng.standard_normal((3, 1, 3, 3)).astype(F32)
    w1[1] = 0
    w2 = rng.standard_normal((2, 3, 3, 3)).astype(F32)
    model = Model([Conv2d(w1, np.array([0.1, 0.5, 0.2], F32), name="conv1"),
                   AvgPool2d(3, stride=1, padding=1, count_include_pad=count_include_pad),
                   Conv2d(w2, np.zeros(2, F32), name="conv2")], backend="sparse", input_shape=(1, 8, 8))
    new, counts = remove_dead_neurons(model)
    assert counts == {"conv1": removed, "conv2": 0}
    x = rng.standard_normal((2, 1, 8, 8)).astype(F32)
    np.testing.assert_allclose(new(x), model(x), rtol=1e-5, atol=1e-5)


def test_remove_dead_neurons_limits(rng):
    w1 = rng.standard_normal((4, 3)).astype(F32)
    w2 = rng.standard_normal((2, 4)).astype(F32)
    w2[:, 1] = 0
    w2[1] = 0  # an output with no inputs: the model's outputs are never removed
    across_softmax = Model([Linear(w1, name="fc1"), Softmax(), Linear(w2, name="fc2")])
    assert remove_dead_neurons(across_softmax)[1] == {"fc1": 0, "fc2": 0}
    plain = Model([Linear(w1, name="fc1"), ReLU(), Linear(w2, name="fc2")], backend="sparse")
    new, removed = remove_dead_neurons(plain)
    assert removed == {"fc1": 1, "fc2": 0}
    assert weighted(new)["fc2"].shape == (2, 3)
    nothing_read = Model([Linear(w1, name="fc1"), ReLU(), Linear(np.zeros((2, 4), F32), name="fc2")])
    new, removed = remove_dead_neurons(nothing_read)
    assert removed == {"fc1": 3, "fc2": 0}  # every layer keeps one neuron
    x = rng.standard_normal((5, 3)).astype(F32)
    np.testing.assert_array_equal(new(x), nothing_read(x))


def test_amounts_must_be_numbers():
    model = sparsenet.models.lenet_300_100(seed=1)
    for amount in (None, "0.5", True):
        with pytest.raises(WeightError, match="amount must be a number"):
            sparsenet.prune.prune_model(model, amount)
    weights = sparsenet.prune.model_weights(model)
    with pytest.raises(WeightError, match="got a list; pass the weight as an array"):
        sparsenet.prune.with_weights(model, {"fc1": list(weights["fc1"])})
