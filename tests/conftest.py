"""Shared helpers: an independent NumPy reference for every layer kind, random
sparse weights, tolerance checks and .npz writers.

The reference never calls sparsenet: convolutions are explicit loops over the
kernel taps (each tap one tensordot over the channels), in float64.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any, Sequence

import numpy as np
import pytest
import scipy.sparse

import sparsenet
from sparsenet import _core

HAS_AVX2 = _core.cpu_has_avx2_fma()
needs_avx2 = pytest.mark.skipif(not HAS_AVX2, reason="this CPU lacks AVX2+FMA")
ISAS = ["scalar", pytest.param("avx2", marks=needs_avx2)]
BACKENDS = ["sparse", "dense", "auto"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a VGG-sized forward pass (about a second each); never skipped")


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20151207)


@pytest.fixture
def restore_threads():
    """Give the test the thread count to change, and put the original back."""
    original = sparsenet.get_num_threads()
    yield original
    sparsenet.set_num_threads(original)


@pytest.fixture
def no_isa_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARSENET_ISA", raising=False)


def pin_dense_direct(model: sparsenet.Model) -> int:
    """Pin every convolution of an auto model that can run dense direct
    convolution (auto's third choice) to it; returns how many were pinned."""
    pinned = 0
    for layer in model.layers:
        core = getattr(layer, "_core", None)
        if isinstance(layer, sparsenet.Conv2d) and core is not None and core._can_run("dense-direct"):
            core._pin_choice("dense-direct")
            pinned += 1
    return pinned


# ------------------------------------------------------------- comparisons
def assert_close(actual: np.ndarray, reference: np.ndarray, rtol: float = 1e-4) -> None:
    """Agreement to ``rtol`` relative, with atol = rtol * max|reference|."""
    actual = np.asarray(actual)
    reference = np.asarray(reference)
    assert actual.shape == reference.shape, f"shape {actual.shape} != reference {reference.shape}"
    assert np.isfinite(actual).all()
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    np.testing.assert_allclose(actual, reference, rtol=rtol, atol=rtol * max(scale, 1e-30))


# ----------------------------------------------------------- random weights
def sparse_dense_array(shape: Sequence[int], density: float, rng: np.random.Generator,
                       dtype=np.float32) -> np.ndarray:
    """A dense array with about ``density`` nonzeros (the rest exact zeros)."""
    values = rng.standard_normal(shape)
    values[values == 0] = 1.0
    keep = rng.random(shape) < density
    return np.where(keep, values, 0.0).astype(dtype)


def csr_arrays(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, data) of a 2-D array, built with scipy."""
    matrix = scipy.sparse.csr_matrix(dense)
    return matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64), matrix.data.astype(np.float32)


def dense_weight(layer: Any) -> np.ndarray:
    """A sparsenet weighted layer's weight as float64 in its logical shape,
    rebuilt from the layer's CSR arrays with scipy (not with sparsenet)."""
    w = layer.weight
    rows, cols = w.shape[0], int(np.prod(w.shape[1:]))
    matrix = scipy.sparse.csr_matrix((w.data.astype(np.float64), w.indices, w.indptr), shape=(rows, cols))
    return matrix.toarray().reshape(w.shape)


def layer_bias(layer: Any) -> np.ndarray | None:
    return None if layer.bias is None else np.asarray(layer.bias, np.float64)


# -------------------------------------------------------- NumPy reference
def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def ref_conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: Any = 1,
               padding: Any = 0) -> np.ndarray:
    """NCHW convolution (cross-correlation, as PyTorch), weight (O, I, kh, kw)."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    n, c, h, w = x.shape
    o, i, kh, kw = weight.shape
    assert c == i
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    padded[:, :, ph:ph + h, pw:pw + w] = x
    out = np.zeros((n, o, oh, ow))
    for dy in range(kh):
        for dx in range(kw):
            window = padded[:, :, dy:dy + sh * (oh - 1) + 1:sh, dx:dx + sw * (ow - 1) + 1:sw]  # n, c, oh, ow
            out += np.tensordot(window, weight[:, :, dy, dx], axes=([1], [1])).transpose(0, 3, 1, 2)
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None, None]
    return out


def ref_conv2d_nhwc(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, stride: int = 1,
                    padding: int = 0) -> np.ndarray:
    """TensorFlow-style convolution: x (N, H, W, C), kernel (kh, kw, in, out)."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    n, h, w, c = x.shape
    kh, kw, i, o = kernel.shape
    assert c == i
    oh, ow = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    padded = np.zeros((n, h + 2 * padding, w + 2 * padding, c))
    padded[:, padding:padding + h, padding:padding + w, :] = x
    out = np.zeros((n, oh, ow, o))
    for dy in range(kh):
        for dx in range(kw):
            window = padded[:, dy:dy + stride * (oh - 1) + 1:stride, dx:dx + stride * (ow - 1) + 1:stride, :]
            out += np.tensordot(window, kernel[dy, dx], axes=([3], [0]))
    if bias is not None:
        out += np.asarray(bias, np.float64)
    return out


def _pooled_size(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    span = size + 2 * p - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:  # PyTorch: the last window starts inside the input
        out -= 1
    return out


def ref_pool2d(x: np.ndarray, mode: str, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True) -> np.ndarray:
    """NCHW max / average pooling with PyTorch semantics (explicit window loop)."""
    (kh, kw) = _pair(kernel_size)
    (sh, sw) = _pair(stride) if stride is not None else (kh, kw)
    (ph, pw) = _pair(padding)
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    oh, ow = _pooled_size(h, kh, sh, ph, ceil_mode), _pooled_size(w, kw, sw, pw, ceil_mode)
    out = np.empty((n, c, oh, ow))
    for oy in range(oh):
        y0 = oy * sh - ph
        y_end = min(y0 + kh, h + ph)
        ys, ye = max(y0, 0), min(y_end, h)
        for ox in range(ow):
            x0 = ox * sw - pw
            x_end = min(x0 + kw, w + pw)
            xs, xe = max(x0, 0), min(x_end, w)
            window = x[:, :, ys:ye, xs:xe]
            if mode == "max":
                out[:, :, oy, ox] = window.max(axis=(2, 3))
            else:
                count = (y_end - y0) * (x_end - x0) if count_include_pad else (ye - ys) * (xe - xs)
                out[:, :, oy, ox] = window.sum(axis=(2, 3)) / count
    return out


def ref_maxpool_nhwc(x: np.ndarray, k: int) -> np.ndarray:
    n, h, w, c = x.shape
    oh, ow = h // k, w // k
    return x[:, :oh * k, :ow * k, :].reshape(n, oh, k, ow, k, c).max(axis=(2, 4))


def ref_linear(x: np.ndarray, weight: Any, bias: np.ndarray | None) -> np.ndarray:
    """x (N, in) times weight (out, in) transposed; weight may be a scipy matrix."""
    x = np.asarray(x, np.float64)
    out = np.asarray((weight @ x.T).T, np.float64)
    if bias is not None:
        out = out + np.asarray(bias, np.float64)
    return out


def ref_relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def ref_flatten(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, C*H*W) in C, H, W order."""
    return x.reshape(x.shape[0], -1)


def ref_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def reference_forward(layers: Sequence[sparsenet.Layer], x: np.ndarray) -> np.ndarray:
    """Run a list of sparsenet layer objects with the NumPy reference, reading
    only their weights (via scipy) and their documented configuration."""
    out = np.asarray(x, np.float64)
    for layer in layers:
        if isinstance(layer, sparsenet.Conv2d):
            out = ref_conv2d(out, dense_weight(layer), layer_bias(layer), layer.stride, layer.padding)
        elif isinstance(layer, sparsenet.Linear):
            out = ref_linear(out, dense_weight(layer), layer_bias(layer))
        elif isinstance(layer, sparsenet.MaxPool2d):
            out = ref_pool2d(out, "max", layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode)
        elif isinstance(layer, sparsenet.AvgPool2d):
            out = ref_pool2d(out, "avg", layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode,
                             layer.count_include_pad)
        elif isinstance(layer, sparsenet.GlobalAvgPool2d):
            out = out.mean(axis=(2, 3), keepdims=True)
        elif isinstance(layer, sparsenet.ReLU):
            out = ref_relu(out)
        elif isinstance(layer, sparsenet.Flatten):
            out = ref_flatten(out)
        elif isinstance(layer, sparsenet.Softmax):
            out = ref_softmax(out)
        elif isinstance(layer, sparsenet.Dropout):
            pass
        else:  # pragma: no cover - a new layer kind needs a reference here
            raise AssertionError(f"no reference for {layer!r}")
    return out


# ------------------------------------------------------------ .npz helpers
def npz_bytes(arrays: dict[str, np.ndarray], compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def write_npz(path, arrays: dict[str, np.ndarray], compress: bool = False) -> None:
    with open(path, "wb") as handle:
        handle.write(npz_bytes(arrays, compress))


def read_npz(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def graph_of(arrays: dict[str, np.ndarray]) -> dict:
    return json.loads(arrays["__sparsenet__"][()].decode("utf-8"))


def with_graph(arrays: dict[str, np.ndarray], graph: dict) -> dict[str, np.ndarray]:
    """A copy of a saved model's arrays with its JSON graph replaced."""
    out = dict(arrays)
    out["__sparsenet__"] = np.array(json.dumps(graph).encode("utf-8"))
    return out


def zip_member_data_offset(path, member: str) -> int:
    """Offset in the file of a stored member's first byte of data (past the local header)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
    assert header[:4] == b"PK\x03\x04"
    name_length = int.from_bytes(header[26:28], "little")
    extra_length = int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_length + extra_length


# --------------------------------------------------------- small models
def small_conv_model_layers(rng: np.random.Generator, weights: str = "dense") -> list[sparsenet.Layer]:
    """Every layer kind once: strided padded conv, pools with padding and ceil mode,
    Flatten, Linear, Softmax. ``weights``: "dense" arrays with zeros or "scipy"."""
    w1 = sparse_dense_array((6, 3, 3, 3), 0.5, rng)
    w2 = sparse_dense_array((8, 6, 3, 2), 0.3, rng)
    w3 = sparse_dense_array((10, 8 * 2 * 2), 0.4, rng)
    b1, b2, b3 = (rng.standard_normal(k).astype(np.float32) * 0.1 for k in (6, 8, 10))
    if weights == "scipy":
        conv1 = sparsenet.Conv2d(scipy.sparse.csr_matrix(w1.reshape(6, -1)), b1, stride=2, padding=1,
                                 kernel_size=3)
        conv2 = sparsenet.Conv2d(scipy.sparse.coo_matrix(w2.reshape(8, -1)), b2, padding=(1, 0),
                                 kernel_size=(3, 2), in_channels=6)
        fc = sparsenet.Linear(scipy.sparse.csc_matrix(w3), b3)
    else:
        conv1 = sparsenet.Conv2d(w1, b1, stride=2, padding=1)
        conv2 = sparsenet.Conv2d(w2, b2, padding=(1, 0))
        fc = sparsenet.Linear(w3, b3)
    return [
        conv1, sparsenet.ReLU(),                                    # (6, 9, 9) for 17x18 input
        sparsenet.MaxPool2d(2, ceil_mode=True),                     # (6, 5, 5)
        conv2, sparsenet.ReLU(),                                    # (8, 5, 4)
        sparsenet.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),  # (8, 3, 2)
        sparsenet.MaxPool2d((2, 1), stride=(1, 1)),                 # (8, 2, 2)
        sparsenet.Flatten(), sparsenet.Dropout(0.3),
        fc, sparsenet.Softmax(),
    ]


SMALL_CONV_INPUT = (3, 17, 18)


# ------------------------------------------ the architectures, spelled out
# Written from the papers / reference implementations, not from sparsenet.models:
# ("conv", name, padding) stride 1; ("pool",) 2x2 max; ("fc", name); ("relu",); ("flatten",).
def _vgg_ops(blocks: Sequence[int]) -> list[tuple]:
    ops: list[tuple] = []
    for block, count in enumerate(blocks, start=1):
        ops += [op for i in range(1, count + 1) for op in (("conv", f"conv{block}_{i}", 1), ("relu",))]
        ops.append(("pool",))
    return ops + [("flatten",), ("fc", "fc6"), ("relu",), ("fc", "fc7"), ("relu",), ("fc", "fc8")]


ARCH_OPS = {
    "lenet_300_100": [("flatten",), ("fc", "fc1"), ("relu",), ("fc", "fc2"), ("relu",), ("fc", "fc3")],
    # Caffe's lenet_train_test.prototxt: no ReLU after the convolutions.
    "lenet5": [("conv", "conv1", 0), ("pool",), ("conv", "conv2", 0), ("pool",), ("flatten",),
               ("fc", "fc1"), ("relu",), ("fc", "fc2")],
    # TensorFlow's "Deep MNIST for experts": 5x5 SAME convolutions, 2x2 max pools, fc 3136-1024-10.
    "mnist_cnn": [("conv", "conv1", 2), ("relu",), ("pool",), ("conv", "conv2", 2), ("relu",), ("pool",),
                  ("flatten",), ("fc", "fc1"), ("relu",), ("fc", "fc2")],
    "vgg16": _vgg_ops((2, 2, 3, 3, 3)),
    "vgg19": _vgg_ops((2, 2, 4, 4, 4)),
}

ARCH_SHAPES = {
    "lenet_300_100": {"fc1": (300, 784), "fc2": (100, 300), "fc3": (10, 100)},
    "lenet5": {"conv1": (20, 1, 5, 5), "conv2": (50, 20, 5, 5), "fc1": (500, 800), "fc2": (10, 500)},
    "mnist_cnn": {"conv1": (32, 1, 5, 5), "conv2": (64, 32, 5, 5), "fc1": (1024, 3136), "fc2": (10, 1024)},
}
INPUT_SHAPES = {"lenet_300_100": (784,), "lenet5": (1, 28, 28), "mnist_cnn": (1, 28, 28),
                "vgg16": (3, 224, 224), "vgg19": (3, 224, 224)}


def weighted_names(arch: str) -> list[str]:
    return [op[1] for op in ARCH_OPS[arch] if op[0] in ("conv", "fc")]


def input_batch(arch: str, batch: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, *INPUT_SHAPES[arch]), dtype=np.float32)


def arch_forward(arch: str, weights: dict[str, tuple[Any, np.ndarray | None]], x: np.ndarray) -> np.ndarray:
    """PyTorch-style (NCHW, C-H-W flatten) forward pass of ``arch`` with
    ``weights[name] = (weight in (O, I, kh, kw) / (out, in), or a scipy matrix, bias)``."""
    out = np.asarray(x, np.float64)
    for op in ARCH_OPS[arch]:
        if op[0] == "conv":
            weight, bias = weights[op[1]]
            out = ref_conv2d(out, weight, bias, 1, op[2])
        elif op[0] == "fc":
            weight, bias = weights[op[1]]
            out = ref_linear(out, weight, bias)
        elif op[0] == "pool":
            out = ref_pool2d(out, "max", 2)
        elif op[0] == "relu":
            out = ref_relu(out)
        elif op[0] == "flatten":
            out = ref_flatten(out)
    return out


def model_weights(model: sparsenet.Model) -> dict[str, tuple[Any, np.ndarray | None]]:
    """A model's weights, rebuilt from their CSR arrays with scipy: convolutions
    dense, FC layers as scipy matrices."""
    weights: dict[str, tuple[Any, np.ndarray | None]] = {}
    for layer in model.layers:
        if isinstance(layer, sparsenet.Conv2d):
            weights[layer.name] = (dense_weight(layer), layer_bias(layer))
        elif isinstance(layer, sparsenet.Linear):
            w = layer.weight
            matrix = scipy.sparse.csr_matrix((w.data.astype(np.float64), w.indices, w.indptr), shape=w.shape)
            weights[layer.name] = (matrix, layer_bias(layer))
    return weights


def arch_reference(model: sparsenet.Model, arch: str, x: np.ndarray) -> np.ndarray:
    return arch_forward(arch, model_weights(model), x)


def tf_arch_forward(arch: str, weights: dict[str, tuple[np.ndarray, np.ndarray]], x_nchw: np.ndarray) -> np.ndarray:
    """TensorFlow-style forward pass: NHWC activations, kernels (kh, kw, in, out),
    FC weights (in, out), feature maps flattened in (H, W, C) order."""
    out = np.asarray(x_nchw, np.float64)
    out = out.transpose(0, 2, 3, 1) if out.ndim == 4 else out
    for op in ARCH_OPS[arch]:
        if op[0] == "conv":
            kernel, bias = weights[op[1]]
            out = ref_conv2d_nhwc(out, kernel, bias, 1, op[2])
        elif op[0] == "fc":
            kernel, bias = weights[op[1]]
            out = out @ np.asarray(kernel, np.float64) + bias
        elif op[0] == "pool":
            out = ref_maxpool_nhwc(out, 2)
        elif op[0] == "relu":
            out = ref_relu(out)
        elif op[0] == "flatten":
            out = out.reshape(out.shape[0], -1)  # NHWC: H, W, C order
    return out


def random_tf_weights(arch: str, rng: np.random.Generator, density: float = 0.3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random pruned weights in TensorFlow layouts for ``arch``."""
    weights = {}
    for name, shape in ARCH_SHAPES[arch].items():
        if len(shape) == 4:
            o, i, kh, kw = shape
            tf_shape: tuple = (kh, kw, i, o)
        else:
            tf_shape = (shape[1], shape[0])
        kernel = sparse_dense_array(tf_shape, density, rng) / np.sqrt(density * np.prod(tf_shape[:-1]))
        weights[name] = (kernel.astype(np.float32), (rng.standard_normal(shape[0]) * 0.1).astype(np.float32))
    return weights
