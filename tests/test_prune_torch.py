"""The PyTorch pruning adapter: masks hold through every optimizer, the
iterate-prune-retrain loop reaches its schedule, export matches torch, and the
reproduction pipeline runs end to end on the shipped MNIST sample."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import sparsenet  # noqa: E402
from sparsenet.cli import DEMO_SAMPLE, data_path, main  # noqa: E402
from sparsenet.datasets import load_mnist  # noqa: E402
from sparsenet.models import get_architecture  # noqa: E402
from sparsenet.prune import PolynomialDecay  # noqa: E402
from sparsenet.prune.pytorch import Pruner, train  # noqa: E402
from sparsenet.reproduce import torch_module  # noqa: E402


def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 3 * 3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, 8, 8), generator=g), torch.randint(0, 3, (n,), generator=g)


OPTIMIZERS = {
    "sgd-momentum-decay": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
    "sgd-nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_pruned_weights_stay_exactly_zero_through_optimizer_steps(name):
    net = small_net()
    optimizer = OPTIMIZERS[name](net.parameters())
    pruner = Pruner(net).attach(optimizer)
    x, y = batch()
    for step in range(12):
        if step == 4:  # prune after the optimizer has built momentum / moments for every weight
            densities = pruner.prune(0.7)
            assert all(abs(d - 0.3) < 0.02 for d in densities.values())
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    for layer_name, module in pruner.layers.items():
        mask = pruner.masks[layer_name]
        assert (module.weight[~mask] == 0).all(), layer_name
        assert (module.weight[mask] != 0).float().mean() > 0.99, "surviving weights still train"
        for value in optimizer.state[module.weight].values():
            if torch.is_tensor(value) and value.shape == mask.shape:
                assert (value[~mask] == 0).all(), f"{layer_name}: optimizer state revives pruned weights"


def test_gradients_of_pruned_weights_are_masked():
    net = small_net()
    pruner = Pruner(net)
    pruner.prune({"4": 0.5})
    x, y = batch()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    assert (net[4].weight.grad[~pruner.masks["4"]] == 0).all()
    assert pruner.densities()["0"] == 1.0 and pruner.densities()["6"] == 1.0


def test_masks_never_grow_and_methods_agree_with_numpy():
    net = small_net()
    pruner = Pruner(net)
    weights = pruner.weights()
    pruner.prune(0.5)
    first = {k: v.clone() for k, v in pruner.masks.items()}
    pruner.prune(0.2)  # a lower rate revives nothing
    assert all(torch.equal(first[k], pruner.masks[k]) for k in first)
    expected = sparsenet.prune.prune_by_rate(weights["4"], 0.5)
    np.testing.assert_array_equal(first["4"].numpy(), expected)
    pruner.prune(0.9, method="global")
    assert abs(pruner.density() - 0.1) < 1e-3
    pruner.prune(1.0, method="std")
    assert pruner.density() < 0.1


def test_existing_zeros_become_the_initial_mask():
    net = small_net()
    with torch.no_grad():
        net[4].weight[:, :5] = 0
    assert (~Pruner(net).masks["4"][:, :5]).all()


def test_bad_arguments_are_named():
    net = small_net()
    with pytest.raises(sparsenet.WeightError, match="no Conv2d or Linear layer named 'fc9'"):
        Pruner(net, layers=["fc9"])
    pruner = Pruner(net)
    with pytest.raises(sparsenet.WeightError, match="unknown layers"):
        pruner.prune({"fc9": 0.5})
    with pytest.raises(sparsenet.WeightError, match="unknown pruning method"):
        pruner.prune(0.5, method="random")
    with pytest.raises(sparsenet.WeightError, match="outside"):
        pruner.prune(1.5)
    with pytest.raises(sparsenet.WeightError, match="schedule needs a pruner"):
        train(net, *batch(), torch.optim.SGD(net.parameters(), lr=0.1), 1,
              schedule=PolynomialDecay(0, 0.5, 0, 10), progress=False)


def test_train_follows_the_schedule_and_export_matches_torch():
    net = small_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    pruner = Pruner(net).attach(optimizer)
    final = {"0": 0.25, "4": 0.8, "6": 0.5}
    x, y = batch(64)
    schedule = PolynomialDecay(0.0, final, begin_step=0, end_step=7, frequency=2)
    lines = []
    step = train(net, x.numpy(), y.numpy(), optimizer, epochs=2, batch_size=16, pruner=pruner, schedule=schedule,
                 progress=lambda line, final: lines.append(line) if final else None)
    assert step == 8 and len(lines) == 2 and "density" in lines[-1]
    for name, sparsity in final.items():
        assert abs(pruner.densities()[name] - (1 - sparsity)) < 0.02
    model = pruner.export(x[:1], backend="sparse")
    net.eval()
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(model(x.numpy()), expected, rtol=1e-4, atol=1e-5)
    assert model.nnz == sum(int(m.sum()) for m in pruner.masks.values())


def test_torch_twin_of_each_architecture_matches_sparsenet_layout():
    for name in ("lenet_300_100", "lenet5", "mnist_cnn"):
        arch = get_architecture(name)
        net = torch_module(arch)
        shapes = {n: tuple(m.weight.shape) for n, m in net.named_modules() if hasattr(m, "weight")}
        assert shapes == {s.name: s.weight_shape for s in arch.weighted()}


def test_reproduce_smoke_on_the_shipped_sample(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    sample = data_path(DEMO_SAMPLE)
    for kind in ("images-idx3", "labels-idx1"):  # the sample doubles as a tiny training set
        shutil.copy(os.path.join(sample, f"t10k-{kind}-ubyte.gz"), data / f"train-{kind}-ubyte.gz")
        shutil.copy(os.path.join(sample, f"t10k-{kind}-ubyte.gz"), data / f"t10k-{kind}-ubyte.gz")
    out = tmp_path / "out"
    assert main(["reproduce", "lenet_300_100", "--data", str(data), "--out", str(out), "--quick"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] and results["train_images"] == 600 and results["test_images"] == 1000
    assert results["pruned_error"] == results["pruned_error_dense_backend"]
    assert abs(results["density"] - 0.0818) < 0.002  # the recipe's 8/9/26 % reached in one epoch
    assert results["dense_error"] < 0.5, "one epoch on 600 digits learns something"
    assert results["file_bytes"]["sparsenet"] < results["file_bytes"]["dense"] / 4
    pruned = sparsenet.Model.load(out / "pruned.npz")
    test = load_mnist(data, "test")
    accuracy = sparsenet.datasets.accuracy(pruned, test.images, test.labels)
    assert abs((1 - accuracy) - results["pruned_error"]) < 1e-12
    assert "pruned error" in capsys.readouterr().out


def test_bad_training_arguments_are_typed_errors():
    """Pruner takes one layer name as a string; train refuses what it would
    otherwise divide by zero on, truncate or hand to torch as an IndexError."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    assert list(Pruner(net, layers="1").layers) == ["1"]
    images, labels = np.zeros((6, 1, 2, 2), np.float32), np.array([0, 1, 2, 0, 1, 2])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for args, kwargs, match in [
            ((images[:0], labels[:0]), {}, "no training images"),
            ((images, labels), {"batch_size": 0}, "batch_size must be a positive int"),
            ((images, labels + 5), {}, "label 7 is out of range for the module's 3 outputs"),
            ((images, labels - 1), {}, "label -1 is negative"),
            ((images, labels + 0.5), {}, "labels must be a 1-D array of class indices")]:
        with pytest.raises(sparsenet.InputError, match=match):
            train(net, *args, opt, epochs=1, progress=False, **kwargs)
