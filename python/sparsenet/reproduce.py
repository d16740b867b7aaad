"""Reproductions of Han et al. (NIPS 2015) on MNIST-format data, on CPU in minutes.

``sparsenet reproduce lenet5 --data ../shared/data/mnist --out runs/lenet5``
trains the network dense, prunes it on a polynomial-decay schedule while
retraining with the pruned weights held at zero, fine-tunes, exports both nets
to sparsenet and evaluates them with sparsenet (the pruned one on both
backends, which must agree). It writes ``dense.npz``, ``pruned.npz`` and
``results.json`` (errors, per-layer densities beside Han's, file sizes,
latencies) to ``--out``. Needs PyTorch (``sparsenet[torch]``).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from ._timing import median_seconds
from .datasets import accuracy, load_mnist
from .errors import ModelError
from .models import Architecture, get_architecture


@dataclass(frozen=True)
class Recipe:
    """Training and pruning settings for one architecture."""

    arch: str
    final_sparsity: dict            # per layer, the fraction of weights pruned at the end
    dense_epochs: int
    prune_epochs: int               # the schedule runs from 0 to final_sparsity over these epochs
    finetune_epochs: int            # then retraining at constant sparsity
    lr: float = 1e-3                # Adam; cosine-annealed within each phase
    retrain_lr: float = 5e-4
    batch_size: int = 64
    frequency: int = 100            # prune every this many steps during the schedule
    note: str = ""


RECIPES: dict[str, Recipe] = {
    # Han et al. Table 1: LeNet-300-100 8/9/26 % (12x, 1.64 % -> 1.59 % error).
    "lenet_300_100": Recipe("lenet_300_100", {"fc1": 0.92, "fc2": 0.91, "fc3": 0.74},
                            dense_epochs=15, prune_epochs=6, finetune_epochs=10, batch_size=100),
    # Han et al. Table 2: LeNet-5 66/12/8/19 % (12x, 0.80 % -> 0.77 %). Han's densities leave 8.4 % of the
    # weights; fc1 at 7.5 % brings the net under 8.3 % (12x).
    "lenet5": Recipe("lenet5", {"conv1": 0.34, "conv2": 0.88, "fc1": 0.925, "fc2": 0.81},
                     dense_epochs=12, prune_epochs=5, finetune_epochs=8),
    # The TensorFlow-tutorial CNN; the public TF implementation pruned 90 % of it (99.17 % -> 98.99 %).
    "mnist_cnn": Recipe("mnist_cnn", {"conv1": 0.2, "conv2": 0.6, "fc1": 0.91, "fc2": 0.7},
                        dense_epochs=3, prune_epochs=2, finetune_epochs=3, batch_size=100,
                        note="90.4 % of all weights pruned; the published run pruned 90 %"),
}


def torch_module(arch: Architecture) -> Any:
    """A ``torch.nn.Sequential`` with the architecture's layers, named as in sparsenet."""
    import torch.nn as nn

    layers: "OrderedDict[str, Any]" = OrderedDict()
    for index, spec in enumerate(arch.layers):
        if spec.kind == "conv2d":
            out_channels, in_channels, kh, _ = spec.weight_shape
            layers[spec.name] = nn.Conv2d(in_channels, out_channels, kh, stride=spec.stride, padding=spec.padding)
        elif spec.kind == "linear":
            layers[spec.name] = nn.Linear(spec.weight_shape[1], spec.weight_shape[0])
        elif spec.kind == "maxpool2d":
            layers[f"pool{index}"] = nn.MaxPool2d(spec.pool)
        elif spec.kind == "relu":
            layers[f"relu{index}"] = nn.ReLU()
        elif spec.kind == "flatten":
            layers[f"flatten{index}"] = nn.Flatten()
        elif spec.kind == "dropout":
            layers[f"dropout{index}"] = nn.Dropout()
        else:
            raise ModelError(f"{arch.name}: layer kind {spec.kind!r} has no PyTorch twin here")
    return nn.Sequential(layers)


def _file_sizes(model: Any) -> dict[str, int]:
    from .format import file_sizes

    with tempfile.TemporaryDirectory() as tmp:
        sizes = file_sizes(model, tmp)
        compressed = os.path.join(tmp, "compressed.npz")
        model.save(compressed, compress=True)
        sizes["sparsenet_compressed"] = os.path.getsize(compressed)
    return {key: int(value) for key, value in sizes.items()}


def _layer_table(model: Any, han: dict) -> list[dict]:
    from .layers import _Weighted

    return [{"layer": layer.name, "shape": list(layer.shape), "weights": int(np.prod(layer.shape)),
             "nonzeros": layer.nnz, "density": layer.density, "han_density": han.get(layer.name)}
            for layer in model.layers if isinstance(layer, _Weighted)]


def run(name: str, data: str, out: str, dataset: str | None = None, seed: int = 0, threads: int | None = None,
        quick: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train, prune, retrain, export and evaluate one recipe; write results to ``out``.

    ``quick``: a smoke run on 600 training and 1,000 test images with one epoch
    per phase (checks the pipeline, not the published numbers)."""
    from .frameworks._common import require
    from .model import Model
    from .prune import PolynomialDecay
    from .prune.pytorch import Pruner, train

    if name not in RECIPES:
        raise ModelError(f"no reproduction named {name!r}; known: {', '.join(RECIPES)}")
    torch = require("torch", "prune")
    recipe = RECIPES[name]
    arch = get_architecture(recipe.arch)
    os.makedirs(out, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train_split = load_mnist(data, "train", limit=600 if quick else None)
    test_split = load_mnist(data, "test", limit=1000 if quick else None)
    dense_epochs, prune_epochs, finetune_epochs = ((1, 1, 1) if quick else
                                                   (recipe.dense_epochs, recipe.prune_epochs, recipe.finetune_epochs))
    steps_per_epoch = -(-len(train_split.images) // recipe.batch_size)
    test_x, test_y = torch.from_numpy(test_split.images), torch.from_numpy(test_split.labels)
    net = torch_module(arch)

    @torch.no_grad()
    def torch_accuracy() -> float:
        net.eval()
        return float((net(test_x).argmax(1) == test_y).float().mean())

    started = time.perf_counter()
    log(f"{name} on {dataset or data}: dense training, {dense_epochs} epochs of {len(train_split.images)} images")
    optimizer = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, dense_epochs)
    train(net, train_split.images, train_split.labels, optimizer, dense_epochs, recipe.batch_size,
          lr_scheduler=cosine, evaluate=torch_accuracy, seed=seed, label="dense")
    dense_seconds = time.perf_counter() - started
    example = torch.zeros((1, *train_split.images.shape[1:]))  # LeNet-300-100 flattens the image itself
    net.eval()
    dense_model = Model.from_torch(net, example, backend="dense", name=f"{name}_dense")
    dense_model.save(os.path.join(out, "dense.npz"))
    dense_accuracy = accuracy(dense_model, test_split.images, test_split.labels)
    log(f"dense test error (sparsenet): {100 * (1 - dense_accuracy):.2f} %")

    started = time.perf_counter()
    pruner = Pruner(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=recipe.retrain_lr)
    pruner.attach(optimizer)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, prune_epochs + finetune_epochs)
    end_step = prune_epochs * steps_per_epoch - 1
    schedule = PolynomialDecay(0.0, recipe.final_sparsity, begin_step=0, end_step=end_step,
                               frequency=min(recipe.frequency, max(1, end_step // 4)))
    log(f"pruning: {schedule}, then {finetune_epochs} epochs of retraining")
    step = train(net, train_split.images, train_split.labels, optimizer, prune_epochs, recipe.batch_size,
                 pruner=pruner, schedule=schedule, lr_scheduler=cosine, evaluate=torch_accuracy, seed=seed + 1,
                 label="prune")
    train(net, train_split.images, train_split.labels, optimizer, finetune_epochs, recipe.batch_size,
          pruner=pruner, lr_scheduler=cosine, evaluate=torch_accuracy, seed=seed + 2, start_step=step,
          label="retrain")
    prune_seconds = time.perf_counter() - started
    pruned_path = os.path.join(out, "pruned.npz")
    pruner.export(example, name=f"{name}_pruned").save(pruned_path)
    sparse_model = Model.load(pruned_path, backend="sparse")
    dense_backend = Model.load(pruned_path, backend="dense")
    sparse_accuracy = accuracy(sparse_model, test_split.images, test_split.labels)
    dense_backend_accuracy = accuracy(dense_backend, test_split.images, test_split.labels)
    if sparse_accuracy != dense_backend_accuracy:
        log(f"warning: sparse and dense backends disagree: {sparse_accuracy} vs {dense_backend_accuracy}")
    layers = _layer_table(sparse_model, arch.han_densities)
    total = sum(row["weights"] for row in layers)
    kept = sum(row["nonzeros"] for row in layers)

    latency = {}
    for batch in (1, 64):
        x = np.ascontiguousarray(np.resize(test_split.images, (batch, *test_split.images.shape[1:])))
        latency[f"batch{batch}"] = {f"{key}_ms": 1e3 * median_seconds(model, x, min_time=0.2, max_runs=200)
                                    for key, model in (("sparse", sparse_model), ("dense", dense_backend),
                                                       ("dense_model", dense_model))}
    import sparsenet

    results = {
        "name": name, "dataset": dataset or os.path.basename(os.path.normpath(data)), "quick": quick, "seed": seed,
        "recipe": asdict(recipe), "train_images": len(train_split.images), "test_images": len(test_split.images),
        "dense_error": 1 - dense_accuracy, "pruned_error": 1 - sparse_accuracy,
        "pruned_error_dense_backend": 1 - dense_backend_accuracy, "torch_pruned_error": 1 - torch_accuracy(),
        "weights": total, "nonzeros": kept, "density": kept / total, "compression": total / max(1, kept),
        "layers": layers, "file_bytes": _file_sizes(sparse_model), "dense_file_bytes": os.path.getsize(os.path.join(out, "dense.npz")),
        "latency": latency, "dense_train_seconds": dense_seconds, "prune_retrain_seconds": prune_seconds,
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": sparsenet.get_num_threads(),
                    "torch_threads": torch.get_num_threads(), "isa": sparsenet.kernel_info()["isa"],
                    "torch": torch.__version__, "sparsenet": sparsenet.__version__},
    }
    with open(os.path.join(out, "results.json"), "w") as stream:
        json.dump(results, stream, indent=1)
    log(f"{name}: dense error {100 * results['dense_error']:.2f} %, pruned error {100 * results['pruned_error']:.2f} % "
        f"(dense backend {100 * results['pruned_error_dense_backend']:.2f} %), {100 * results['density']:.2f} % of "
        f"weights left ({results['compression']:.1f}x); results in {out}")
    return results
