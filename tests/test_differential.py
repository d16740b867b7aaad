"""Randomized differential tests: single layers of random geometry, density,
index order, batch, backend, auto choice and thread count against the NumPy
reference. Geometry is drawn around the engine's own thresholds (the L1
vector length, 16-bit indices, column panels, 64-column tiles), where layouts
switch; and small random networks, for the model-level paths. A fixed seed
per case, printed on failure, makes every case reproducible
(``pytest "tests/test_differential.py::test_random_layer_matches_reference[17]"``)."""

from __future__ import annotations

import numpy as np
import pytest

import sparsenet
from sparsenet import AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Model, ReLU, Softmax

from conftest import ref_conv2d, ref_linear, reference_forward

CASES = 300
CHAINS = 300
# Columns at and around the switches: 64-column tiles, 256-column panels,
# kL1VectorFloats (6144), 16-bit indices (65536).
COLUMNS = [1, 7, 63, 64, 65, 255, 257, 4096, 6143, 6144, 6145, 12000, 25088, 65536, 65537]
DENSITIES = [0.001, 0.01, 0.05, 0.2, 0.6, 1.0]


def _weight(shape: tuple, density: float, shuffle: bool, rng: np.random.Generator):
    dense = np.where(rng.random(shape) < density, rng.standard_normal(shape), 0).astype(np.float32)
    w = sparsenet.SparseWeight.from_dense(dense)
    indices, data = w.indices.copy(), w.data.copy()
    if shuffle:  # each row's nonzeros in random order
        for r in range(w.rows):
            part = slice(w.indptr[r], w.indptr[r + 1])
            order = rng.permutation(part.stop - part.start)
            indices[part], data[part] = indices[part][order], data[part][order]
    return dense, sparsenet.SparseWeight(shape, w.indptr, indices, data)


def _case(rng: np.random.Generator):
    """(layer, x, reference output, description)."""
    density = float(rng.choice(DENSITIES))
    shuffle, relu, with_bias = (bool(rng.random() < 0.5) for _ in range(3))
    while True:
        if rng.random() < 0.5:
            rows, cols = int(rng.choice([1, 3, 17, 64, 300])), int(rng.choice(COLUMNS))
            if rows * cols > 4_000_000:
                continue
            batch = int(rng.choice([1, 2, 31, 65]))
            dense, weight = _weight((rows, cols), density, shuffle, rng)
            bias = rng.standard_normal(rows).astype(np.float32) if with_bias else None
            layer = Linear(weight, bias)
            x = rng.standard_normal((batch, cols)).astype(np.float32)
            reference = ref_linear(x, dense, bias)
            what = f"linear {rows}x{cols} batch {batch}"
        else:
            kernel = [(1, 1), (3, 3), (5, 5), (1, 3), (3, 1), (2, 2)][rng.integers(6)]
            stride = [(1, 1), (2, 2), (1, 2)][rng.integers(3)] if rng.random() < 0.4 else (1, 1)
            padding = [(0, 0), (1, 1), (2, 2), (0, 1)][rng.integers(4)]
            c, o = int(rng.choice([1, 3, 8, 64])), int(rng.choice([1, 5, 16, 65]))
            h, w = int(rng.choice([1, 5, 14, 28])), int(rng.choice([1, 5, 14, 28, 70]))
            if h + 2 * padding[0] < kernel[0] or w + 2 * padding[1] < kernel[1]:
                continue
            batch = int(rng.choice([1, 2, 5]))
            dense, weight = _weight((o, c, *kernel), density, shuffle, rng)
            bias = rng.standard_normal(o).astype(np.float32) if with_bias else None
            layer = Conv2d(weight, bias, stride=stride, padding=padding)
            x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
            reference = ref_conv2d(x, dense, bias, stride, padding)
            what = f"conv {o}x{c}x{kernel} stride {stride} padding {padding} on {h}x{w} batch {batch}"
        if relu:
            reference = np.maximum(reference, 0.0)
        what += f" density {density} shuffled={shuffle} relu={relu} bias={with_bias}"
        return layer, relu, x, reference, what


@pytest.mark.parametrize("seed", range(CASES))
def test_random_layer_matches_reference(restore_threads, seed):
    rng = np.random.default_rng(seed)
    sparsenet.set_num_threads(int(rng.choice([1, 2])))
    layer, relu, x, reference, what = _case(rng)
    layers = [layer, ReLU()] if relu else [layer]
    runs = []
    for backend in ("sparse", "dense", "auto"):
        model = Model(layers, backend=backend)
        runs.append((backend, model))
    core = layer._core  # the auto model's: every choice it can make, pinned
    if core.backend == "auto":
        for choice in ("sparse", "dense", "dense-direct", "dense-winograd"):
            if core._can_run(choice):
                model = Model(layers, backend="auto")
                layer._core._pin_choice(choice)
                runs.append((f"auto pinned to {choice}", model))
    scale = max(1.0, float(np.abs(reference).max()))
    for name, model in runs:
        out = model(x)
        assert out.shape == reference.shape, f"seed {seed}, {what}, {name}"
        error = float(np.abs(out - reference).max())
        assert np.isfinite(out).all() and error <= 1e-4 * scale * max(1.0, np.sqrt(x[0].size / 100)), \
            f"seed {seed}, {what}, {name}: max error {error:.3g} (scale {scale:.3g})"


def _chain(rng: np.random.Generator):
    """A random small network: up to three of conv / max or average pool / ReLU /
    dropout on a (C, H, W) map, a flatten, up to two Linear (+ ReLU), maybe a
    softmax; weights scaled so activations stay near unit size."""
    def weight(shape):
        fan_in = int(np.prod(shape[1:]))
        density = float(rng.choice([0.05, 0.3, 1.0]))
        scale = 1.0 / np.sqrt(fan_in * density)
        return np.where(rng.random(shape) < density, rng.standard_normal(shape) * scale, 0).astype(np.float32)

    def bias(n):
        return rng.standard_normal(n).astype(np.float32) if rng.random() < 0.5 else None

    shape = (int(rng.choice([1, 3, 8])), int(rng.choice([8, 13, 28])), int(rng.choice([8, 13, 31])))
    input_shape, layers = shape, []
    for _ in range(int(rng.integers(1, 4))):
        c, h, w = shape
        kind = rng.choice(["conv", "max", "avg", "relu", "dropout"])
        if kind == "conv":
            o, k, s = int(rng.choice([4, 16, 33])), int(rng.choice([1, 3, 5])), int(rng.choice([1, 1, 2]))
            p = int(rng.choice([0, k // 2]))
            if h + 2 * p < k or w + 2 * p < k:
                continue
            layers.append(Conv2d(weight((o, c, k, k)), bias(o), stride=s, padding=p))
            shape = (o, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        elif kind in ("max", "avg") and min(h, w) >= 2:
            layers.append(MaxPool2d(2) if kind == "max" else AvgPool2d(2))
            shape = (c, h // 2, w // 2)
        elif kind == "relu":
            layers.append(ReLU())
        elif kind == "dropout":
            layers.append(Dropout())
    layers.append(Flatten())
    features = int(np.prod(shape))
    for _ in range(int(rng.integers(0, 3))):
        out = int(rng.choice([10, 64, 300]))
        layers.append(Linear(weight((out, features)), bias(out)))
        features = out
        if rng.random() < 0.5:
            layers.append(ReLU())
    if rng.random() < 0.3:
        layers.append(Softmax())
    return layers, input_shape


@pytest.mark.parametrize("seed", range(CHAINS))
def test_random_network_matches_reference(restore_threads, seed):
    """Whole small networks: the model-level paths (fused ReLU, images one by
    one through leading convolutions on a worker each, feature-major Linear
    input) on 1-3 threads and every backend."""
    rng = np.random.default_rng(10_000 + seed)
    sparsenet.set_num_threads(int(rng.choice([1, 2, 3])))
    layers, input_shape = _chain(rng)
    x = rng.standard_normal((int(rng.choice([1, 2, 5, 9, 17])), *input_shape)).astype(np.float32)
    reference = reference_forward(layers, x)
    scale = max(1.0, float(np.abs(reference).max()))
    for backend in ("sparse", "dense", "auto"):
        out = Model(layers, backend=backend)(x)
        error = float(np.abs(out - reference).max())
        assert np.isfinite(out).all() and error <= 1e-4 * scale, \
            f"seed {seed}, {backend}, {[type(l).__name__ for l in layers]} on {x.shape}: max error {error:.3g}"
