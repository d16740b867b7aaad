"""Built-in architectures: LeNet-300-100, LeNet-5, the TensorFlow-tutorial
MNIST CNN, VGG-16 and VGG-19.

Each builder returns a :class:`sparsenet.Model` with random weights pruned to
per-layer densities; the defaults are those published by Han et al., "Learning
both Weights and Connections for Efficient Neural Networks" (NIPS 2015).
The same descriptions let ``Model.load(path, arch=NAME)`` read weights exported
by other tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .errors import FormatError
from .layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, SparseWeight
from .model import Model


@dataclass(frozen=True)
class LayerSpec:
    kind: str                      # conv2d, linear, maxpool2d, relu, flatten, dropout
    name: str | None = None
    weight_shape: tuple = ()       # (O, I, kh, kw) or (out, in)
    stride: int = 1
    padding: int = 0
    pool: int = 2
    aliases: tuple = ()            # other names the weights may carry in a file


@dataclass(frozen=True)
class Architecture:
    name: str
    input_shape: tuple
    layers: tuple
    han_densities: Mapping[str, float] = field(default_factory=dict)
    note: str = ""

    def weighted(self) -> list[LayerSpec]:
        return [s for s in self.layers if s.kind in ("conv2d", "linear")]


def _conv(name, cin, cout, k, padding=0, aliases=()):
    return LayerSpec("conv2d", name, (cout, cin, k, k), padding=padding, aliases=tuple(aliases))


def _fc(name, fin, fout, aliases=()):
    return LayerSpec("linear", name, (fout, fin), aliases=tuple(aliases))


RELU, POOL, FLAT, DROP = LayerSpec("relu"), LayerSpec("maxpool2d"), LayerSpec("flatten"), LayerSpec("dropout")

LENET_300_100 = Architecture(
    "lenet_300_100", (784,),
    (FLAT, _fc("fc1", 784, 300, ["ip1"]), RELU, _fc("fc2", 300, 100, ["ip2"]), RELU, _fc("fc3", 100, 10, ["ip3"])),
    {"fc1": 0.08, "fc2": 0.09, "fc3": 0.26},
)

# Caffe's LeNet-5 (lenet_train_test.prototxt): no ReLU after the convolutions.
LENET5 = Architecture(
    "lenet5", (1, 28, 28),
    (_conv("conv1", 1, 20, 5), POOL, _conv("conv2", 20, 50, 5), POOL, FLAT,
     _fc("fc1", 800, 500, ["ip1"]), RELU, _fc("fc2", 500, 10, ["ip2"])),
    {"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19},
)

MNIST_CNN = Architecture(
    "mnist_cnn", (1, 28, 28),
    (_conv("conv1", 1, 32, 5, padding=2), RELU, POOL, _conv("conv2", 32, 64, 5, padding=2), RELU, POOL, FLAT,
     _fc("fc1", 3136, 1024), RELU, _fc("fc2", 1024, 10)),
    {"conv1": 1.0, "conv2": 1.0, "fc1": 0.10, "fc2": 0.10},
    note="Han et al. did not prune this net; the default prunes its FC layers to 10 %, as the TensorFlow "
         "iterative-pruning implementation did.",
)

# Han et al.'s VGG-16 convolution densities, per block.
_HAN_VGG16_CONV = ((0.58, 0.22), (0.34, 0.36), (0.53, 0.24, 0.42), (0.32, 0.27, 0.34), (0.35, 0.29, 0.36))


def _vgg(name: str, blocks: tuple[int, ...]) -> Architecture:
    layers: list[LayerSpec] = []
    densities: dict[str, float] = {}
    channels, torch_index = 3, 0
    widths = (64, 128, 256, 512, 512)
    for block, (count, width) in enumerate(zip(blocks, widths), start=1):
        for i in range(1, count + 1):
            layer = f"conv{block}_{i}"
            layers += [_conv(layer, channels, width, 3, padding=1, aliases=[f"features.{torch_index}"]), RELU]
            # VGG-19's extra convolutions in blocks 3-5 take the block's last VGG-16 density.
            block_densities = _HAN_VGG16_CONV[block - 1]
            densities[layer] = block_densities[min(i, len(block_densities)) - 1]
            channels, torch_index = width, torch_index + 2
        layers.append(POOL)
        torch_index += 1
    layers += [FLAT, _fc("fc6", 25088, 4096, ["classifier.0"]), RELU, DROP,
               _fc("fc7", 4096, 4096, ["classifier.3"]), RELU, DROP, _fc("fc8", 4096, 1000, ["classifier.6"])]
    densities.update(fc6=0.04, fc7=0.04, fc8=0.23)
    note = "" if name == "vgg16" else "Han et al. published VGG-16 only; VGG-19's extra convolutions reuse the density of their block's last VGG-16 layer."
    return Architecture(name, (3, 224, 224), tuple(layers), densities, note)


VGG16 = _vgg("vgg16", (2, 2, 3, 3, 3))
VGG19 = _vgg("vgg19", (2, 2, 4, 4, 4))

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (LENET_300_100, LENET5, MNIST_CNN, VGG16, VGG19)}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise FormatError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}") from None


def random_pruned_weight(shape: tuple, density: float, rng: np.random.Generator, context: str = "weight") -> SparseWeight:
    """A He-initialised weight with exactly round(density * size) nonzeros at random
    positions, values scaled by 1/sqrt(density) so activations keep their scale."""
    if not 0.0 <= density <= 1.0:
        raise FormatError(f"{context}: density {density} is outside [0, 1]")
    rows, cols = shape[0], int(np.prod(shape[1:]))
    nnz = int(round(density * rows * cols))
    flat = np.sort(rng.choice(rows * cols, size=nnz, replace=False)) if nnz < rows * cols else np.arange(rows * cols)
    row_index, col_index = np.divmod(flat, cols)
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_index, minlength=rows), out=indptr[1:])
    scale = np.sqrt(2.0 / (cols * max(density, 1e-12)))
    values = (rng.standard_normal(nnz) * scale).astype(np.float32)
    values[values == 0] = np.float32(scale)  # keep exactly nnz nonzeros
    return SparseWeight(shape, indptr, col_index, values, context)


def build(arch: str | Architecture, weights: Mapping[str, tuple[Any, Any]], backend: str = "auto") -> Model:
    """Assemble an architecture from ``{layer name: (weight, bias)}``."""
    spec = arch if isinstance(arch, Architecture) else get_architecture(arch)
    layers = []
    for index, s in enumerate(spec.layers):
        if s.kind == "conv2d":
            weight, bias = weights[s.name]
            layers.append(Conv2d(weight, bias, stride=s.stride, padding=s.padding, name=s.name))
        elif s.kind == "linear":
            weight, bias = weights[s.name]
            layers.append(Linear(weight, bias, name=s.name))
        elif s.kind == "maxpool2d":
            layers.append(MaxPool2d(s.pool, name=f"pool{index}"))
        elif s.kind == "relu":
            layers.append(ReLU(name=f"relu{index}"))
        elif s.kind == "flatten":
            layers.append(Flatten(name=f"flatten{index}"))
        elif s.kind == "dropout":
            layers.append(Dropout(name=f"dropout{index}"))
    return Model(layers, backend=backend, input_shape=spec.input_shape, name=spec.name)


def random_model(arch: str, densities: Mapping[str, float] | float | None = None, seed: int = 0,
                 backend: str = "auto") -> Model:
    """``arch`` with random weights pruned to ``densities`` (per layer name, one
    float for all layers, or None for Han et al.'s published densities)."""
    spec = get_architecture(arch)
    rng = np.random.default_rng(seed)
    weights = {}
    for s in spec.weighted():
        if densities is None:
            density = spec.han_densities[s.name]
        elif isinstance(densities, (int, float)):
            density = float(densities)
        else:
            density = float(densities.get(s.name, spec.han_densities[s.name]))
        context = f"{s.kind} layer '{s.name}'"
        weight = random_pruned_weight(s.weight_shape, density, rng, context)
        bias = (rng.standard_normal(s.weight_shape[0]) * 0.01).astype(np.float32)
        weights[s.name] = (weight, bias)
    return build(spec, weights, backend)


def lenet_300_100(densities=None, seed: int = 0, backend: str = "auto") -> Model:
    """784-300-100-10 MLP; default densities 8/9/26 %."""
    return random_model("lenet_300_100", densities, seed, backend)


def lenet5(densities=None, seed: int = 0, backend: str = "auto") -> Model:
    """Caffe LeNet-5: conv 20@5x5, pool, conv 50@5x5, pool, fc 800-500, ReLU, fc 500-10; default 66/12/8/19 %."""
    return random_model("lenet5", densities, seed, backend)


def mnist_cnn(densities=None, seed: int = 0, backend: str = "auto") -> Model:
    """TensorFlow-tutorial CNN: conv 32@5x5 same, pool, conv 64@5x5 same, pool, fc 3136-1024, fc 1024-10."""
    return random_model("mnist_cnn", densities, seed, backend)


def vgg16(densities=None, seed: int = 0, backend: str = "auto") -> Model:
    """VGG-16 for 3x224x224 ImageNet input; default Han et al.'s per-layer densities."""
    return random_model("vgg16", densities, seed, backend)


def vgg19(densities=None, seed: int = 0, backend: str = "auto") -> Model:
    """VGG-19 for 3x224x224 ImageNet input."""
    return random_model("vgg19", densities, seed, backend)
