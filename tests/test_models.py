"""Whole models against an independent NumPy forward pass: the built-in
architectures on every backend and batch size, composed models with dense and
scipy weights, ISA selection, kernel_info() and thread counts."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import sparsenet
from sparsenet import AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Model, ReLU, Softmax

from conftest import (ARCH_SHAPES, BACKENDS, HAS_AVX2, INPUT_SHAPES, ISAS, SMALL_CONV_INPUT, arch_reference,
                      assert_close, dense_weight, input_batch, needs_avx2, ref_conv2d, ref_linear, ref_pool2d, ref_relu,
                      pin_dense_direct, ref_softmax, reference_forward, small_conv_model_layers,
                      sparse_dense_array, weighted_names)

BATCHES = [1, 3, 17]


def builder(arch: str):
    return getattr(sparsenet.models, arch)


_REFERENCES: dict = {}


def cached_reference(model: Model, arch: str, batch: int) -> np.ndarray:
    """Reference outputs per (arch, batch); every model here uses seed 0, so the weights agree."""
    key = (arch, batch)
    if key not in _REFERENCES:
        _REFERENCES[key] = arch_reference(model, arch, input_batch(arch, batch))
    return _REFERENCES[key]


# ------------------------------------------------------------- built-ins
@pytest.mark.parametrize("arch", ["lenet_300_100", "lenet5", "mnist_cnn"])
def test_builtin_structure(arch):
    model = builder(arch)()
    assert model.name == arch
    assert model.input_shape == INPUT_SHAPES[arch]
    weighted = [layer for layer in model.layers if isinstance(layer, (Conv2d, Linear))]
    assert [layer.name for layer in weighted] == weighted_names(arch)
    assert {layer.name: layer.shape for layer in weighted} == ARCH_SHAPES[arch]
    assert model.output_shape() == (10,)
    for layer in weighted:
        assert layer.bias is not None and layer.bias.shape == (layer.shape[0],)
        assert layer.nnz == round(sparsenet.models.ARCHITECTURES[arch].han_densities[layer.name]
                                  * np.prod(layer.shape))


@pytest.mark.parametrize("arch", ["lenet_300_100", "lenet5", "mnist_cnn"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
def test_builtin_matches_reference(arch, backend, batch):
    model = builder(arch)(seed=0, backend=backend)
    x = input_batch(arch, batch)
    y = model(x)
    assert y.dtype == np.float32 and y.shape == (batch, 10)
    assert_close(y, cached_reference(model, arch, batch))


def test_lenet_300_100_takes_images_too():
    model = sparsenet.models.lenet_300_100(seed=0)
    x = input_batch("lenet_300_100", 3)
    assert np.array_equal(model(x.reshape(3, 1, 28, 28)), model(x))


@pytest.mark.parametrize("arch", ["lenet_300_100", "lenet5", "mnist_cnn"])
def test_backend_assignment(arch):
    """sparse / dense force every weighted layer; auto runs very sparse layers
    sparse and times both backends for the others, per input size, once."""
    for backend in ("sparse", "dense"):
        model = builder(arch)(backend=backend)
        assert {layer.backend for layer in model.layers if isinstance(layer, (Conv2d, Linear))} == {backend}
    model = builder(arch)(densities={name: (1.0 if i % 2 == 0 else 0.02)
                                     for i, name in enumerate(weighted_names(arch))}, backend="auto", seed=4)
    layers = [next(layer for layer in model.layers if layer.name == name) for name in weighted_names(arch)]
    assert [layer.backend for layer in layers] == ["auto" if i % 2 == 0 else "sparse" for i in range(len(layers))]
    assert all(layer.choices == {} for layer in layers)
    for batch in (1, 3, 3):
        x = input_batch(arch, batch)
        assert_close(model(x), arch_reference(model, arch, x))
    for i, layer in enumerate(layers):
        if i % 2 == 0:  # one measured choice per input size: batch 1 and batch 3 for Linear, one map size for Conv2d
            expected_keys = {1, 3} if isinstance(layer, Linear) else 2
            assert set(layer.choices.values()) <= {"sparse", "dense", "dense-direct", "dense-winograd"}
            assert (set(layer.choices) == expected_keys if isinstance(layer, Linear)
                    else len(layer.choices) == expected_keys), (layer.name, layer.choices)
        else:
            assert layer.choices == {}


@pytest.mark.parametrize("arch", ["lenet5", "mnist_cnn"])
@pytest.mark.parametrize("density", [1.0, 0.0])
def test_builtin_extreme_densities(arch, density):
    """All-dense and all-zero weights (outputs then depend on biases only)."""
    model = builder(arch)(densities=density, seed=3, backend="sparse")
    assert model.nnz == (0 if density == 0 else sum(int(np.prod(layer.shape)) for layer in model.layers
                                                       if isinstance(layer, (Conv2d, Linear))))
    x = input_batch(arch, 3)
    reference = arch_reference(model, arch, x)
    assert_close(model(x), reference)
    dense = Model(model.layers, backend="dense")
    assert_close(dense(x), reference)


@pytest.mark.slow
def test_vgg16_batch1_sparse_dense_reference():
    sparse = sparsenet.models.vgg16(seed=0, backend="sparse")
    assert [layer.name for layer in sparse.layers if isinstance(layer, (Conv2d, Linear))] == weighted_names("vgg16")
    x = input_batch("vgg16", 1)
    y_sparse = sparse(x)
    reference = arch_reference(sparse, "vgg16", x)
    assert y_sparse.shape == (1, 1000)
    assert_close(y_sparse, reference)
    dense = Model(sparse.layers, backend="dense", input_shape=(3, 224, 224))
    assert_close(dense(x), reference)


def test_vgg19_construction():
    model = sparsenet.models.vgg19(densities=0.001, seed=0)
    assert model.input_shape == (3, 224, 224)
    assert model.output_shape() == (1000,)
    weighted = [layer for layer in model.layers if isinstance(layer, (Conv2d, Linear))]
    assert [layer.name for layer in weighted] == weighted_names("vgg19")
    assert len(weighted) == 19
    assert weighted[-3].shape == (4096, 25088)
    with pytest.raises(sparsenet.ShapeError, match="fc6"):
        model.output_shape((3, 64, 64))  # 512x2x2 features do not fit fc6's 25088 inputs


def test_han_densities_are_published_values():
    han = sparsenet.models.ARCHITECTURES
    assert dict(han["lenet_300_100"].han_densities) == {"fc1": 0.08, "fc2": 0.09, "fc3": 0.26}
    assert dict(han["lenet5"].han_densities) == {"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19}
    vgg = han["vgg16"].han_densities
    assert (vgg["conv1_1"], vgg["conv3_3"], vgg["conv5_3"], vgg["fc6"], vgg["fc8"]) == (0.58, 0.42, 0.36, 0.04, 0.23)


def test_random_models_are_reproducible():
    # backend="sparse": two auto models time their layers separately and may choose differently
    a, b = sparsenet.models.lenet5(seed=5, backend="sparse"), sparsenet.models.lenet5(seed=5, backend="sparse")
    c = sparsenet.models.lenet5(seed=6, backend="sparse")
    x = input_batch("lenet5", 2)
    assert np.array_equal(a(x), b(x))
    assert not np.array_equal(a(x), c(x))


# ------------------------------------------------------- composed models
@pytest.mark.parametrize("weights", ["dense", "scipy"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
def test_composed_model_matches_reference(rng, weights, backend, batch):
    layers = small_conv_model_layers(np.random.default_rng(7), weights)
    model = Model(layers, backend=backend, input_shape=SMALL_CONV_INPUT)
    assert model.output_shape() == (10,)
    x = rng.standard_normal((batch, *SMALL_CONV_INPUT)).astype(np.float32)
    y = model(x)
    reference = reference_forward(layers, x)
    assert_close(y, reference)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_scipy_and_dense_weights_give_the_same_model(rng):
    dense_layers = small_conv_model_layers(np.random.default_rng(7), "dense")
    scipy_layers = small_conv_model_layers(np.random.default_rng(7), "scipy")
    for a, b in zip(dense_layers, scipy_layers):
        if isinstance(a, (Conv2d, Linear)):
            assert a.shape == b.shape
            assert np.array_equal(a.weight.to_dense(), b.weight.to_dense())
    x = rng.standard_normal((4, *SMALL_CONV_INPUT)).astype(np.float32)
    assert np.array_equal(Model(dense_layers, backend="sparse")(x), Model(scipy_layers, backend="sparse")(x))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", [1, 2, 9])
@pytest.mark.parametrize("conv", [
    dict(kernel=(3, 3), stride=1, padding=1),
    dict(kernel=(3, 3), stride=1, padding="same"),
    dict(kernel=(5, 3), stride=1, padding=(2, 0)),
    dict(kernel=(1, 1), stride=1, padding=0),   # pointwise: no im2col
    dict(kernel=(1, 1), stride=2, padding=0),
    dict(kernel=(2, 2), stride=(2, 1), padding=(0, 1)),
    dict(kernel=(3, 3), stride=3, padding=2),
    dict(kernel=(7, 7), stride=1, padding=0),   # kernel as large as the input
])
def test_conv_geometries(rng, backend, batch, conv):
    channels, out_channels = 4, 6
    weight = sparse_dense_array((out_channels, channels, *conv["kernel"]), 0.4, rng)
    bias = rng.standard_normal(out_channels).astype(np.float32)
    layer = Conv2d(weight, bias, stride=conv["stride"], padding=conv["padding"])
    model = Model([layer], backend=backend)
    x = rng.standard_normal((batch, channels, 7, 9)).astype(np.float32)
    assert_close(model(x), ref_conv2d(x, weight, bias, conv["stride"], layer.padding))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", [1, 4])
def test_conv_on_larger_maps_and_many_channels(rng, backend, batch):
    """Big enough for the multithreaded paths (more work than one thread's share)."""
    weight = sparse_dense_array((48, 16, 3, 3), 0.15, rng)
    bias = rng.standard_normal(48).astype(np.float32)
    second = sparse_dense_array((8, 48, 3, 3), 0.1, rng)
    model = Model([Conv2d(weight, bias, padding=1), ReLU(), Conv2d(second, None, stride=2)], backend=backend)
    x = rng.standard_normal((batch, 16, 30, 33)).astype(np.float32)
    hidden = ref_relu(ref_conv2d(x, weight, bias, 1, 1))
    assert_close(model(x), ref_conv2d(hidden, second, None, 2, 0))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", [1, 3])
def test_im2col_in_chunks_of_output_rows(rng, restore_threads, backend, batch):
    """Patch matrices over 2^20 floats are lowered and multiplied a chunk of
    output rows at a time: 144 weight columns x 101 output columns give chunks
    of 72 rows, so the 97 (stride 1) and 99 (stride 2) output rows here end in
    a shorter chunk. The stride-2 layer runs im2col on every backend."""
    weight = sparse_dense_array((12, 16, 3, 3), 0.3, rng)
    bias = rng.standard_normal(12).astype(np.float32)
    strided = sparse_dense_array((7, 16, 3, 3), 0.4, rng)
    x = rng.standard_normal((batch, 16, 97, 101)).astype(np.float32)
    wide = rng.standard_normal((batch, 16, 199, 203)).astype(np.float32)
    for threads in (1, 2):
        sparsenet.set_num_threads(threads)
        model = Model([Conv2d(weight, bias, padding=1)], backend=backend)
        if backend == "auto":
            model.layers[0]._core._pin_choice("dense")  # im2col + BLAS, not direct or Winograd
        assert_close(model(x), ref_conv2d(x, weight, bias, 1, 1))
        assert_close(Model([Conv2d(strided, None, stride=2)], backend=backend)(wide),
                     ref_conv2d(wide, strided, None, 2, 0))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", [1, 3])
def test_conv_with_a_deep_input(rng, backend, batch):
    """240 input channels x 3x3 = 2,160 weight columns on a 12x37 map: a 524 KB
    padded image for the direct convolution, a 3.8 MB patch matrix for im2col."""
    weight = sparse_dense_array((16, 240, 3, 3), 0.3, rng)
    bias = rng.standard_normal(16).astype(np.float32)
    second = sparse_dense_array((5, 16, 3, 3), 0.5, rng)
    model = Model([Conv2d(weight, bias, padding=1), Conv2d(second, None, stride=2)], backend=backend)
    x = rng.standard_normal((batch, 240, 12, 37)).astype(np.float32)
    expected = ref_conv2d(ref_conv2d(x, weight, bias, 1, 1), second, None, 2, 0)
    before = sparsenet.get_num_threads()
    try:
        # Fewer images than workers (an odd number of them) and one thread.
        for threads in (1, 3):
            sparsenet.set_num_threads(threads)
            assert_close(model(x), expected)
    finally:
        sparsenet.set_num_threads(before)


needs_sell = pytest.mark.skipif(not (HAS_AVX2 and sparsenet._core._sellmv_win()),
                                reason="the sliced-window kernel needs AVX-512 and must beat csrmv here")


@needs_sell
def test_linear_batch1_on_sliced_windows(rng, restore_threads, monkeypatch):
    """A 10 % layer that stays in cache runs batch 1 on the sliced-window
    layout: the reference's numbers, the same bits on one and two threads
    (tasks take whole row groups), and to rounding those of csrmv
    (SPARSENET_SELL=0) and of the batched path."""
    weight = sparse_dense_array((600, 4096), 0.1, rng)  # 600 rows: the last group is partial
    bias = rng.standard_normal(600).astype(np.float32)
    x = rng.standard_normal((3, 4096)).astype(np.float32)
    model = Model([Linear(weight, bias), ReLU()], backend="sparse")
    assert model.layers[0]._core._uses_sell
    # The layer may have freed its CSR entries (column panels + this layout): the weight comes back exact.
    np.testing.assert_array_equal(dense_weight(model.layers[0]), weight)
    out = {}
    for threads in (1, 2):
        sparsenet.set_num_threads(threads)
        out[threads] = model(x[:1])
    np.testing.assert_array_equal(out[1], out[2])
    expected = ref_relu(ref_linear(x, weight, bias))
    assert_close(out[1], expected[:1], rtol=1e-5)
    assert_close(model(x), expected, rtol=1e-5)
    monkeypatch.setenv("SPARSENET_SELL", "0")
    plain = Model([Linear(weight, bias), ReLU()], backend="sparse")
    assert not plain.layers[0]._core._uses_sell
    assert_close(plain(x[:1]), out[1], rtol=1e-5)


@needs_sell
def test_sliced_windows_only_where_they_pay(rng):
    """Not below 32 columns (the window), not when under 45 % of the lanes
    would hold nonzeros (1 % density), not for the dense backend."""
    for shape, density, backend in [((64, 31), 0.5, "sparse"), ((256, 4096), 0.01, "sparse"),
                                    ((256, 4096), 0.1, "dense")]:
        layer = Linear(sparse_dense_array(shape, density, rng), None)
        model = Model([layer], backend=backend)
        assert not model.layers[0]._core._uses_sell, (shape, density, backend)


@pytest.mark.parametrize("threads, batch", [(1, 1), (2, 1), (2, 3)])
def test_direct_convolutions_in_a_row_pad_over_what_the_last_one_left(rng, restore_threads, threads, batch):
    """Consecutive direct convolutions share the scratch where each pads its
    input, zeroing only the border: every padding column (with the avx2 kernels,
    3-wide kernels pad rows to a multiple of 8 floats: 36 -> 40, 19 -> 24) must
    be zero again, whatever the layer before left there. A Keras VGG caught
    this: left pads of the second convolution's rows held the first's sums."""
    sparsenet.set_num_threads(threads)
    shapes = [(8, 3, 3, 3), (8, 8, 3, 3), (16, 8, 3, 3), (16, 16, 5, 3), (12, 16, 3, 5)]
    weights = [sparse_dense_array(shape, 0.4, rng) for shape in shapes]
    biases = [rng.standard_normal(shape[0]).astype(np.float32) for shape in shapes]
    pads = [3, 1, 1, 2, (1, 2)]
    layers = [Conv2d(weights[0], biases[0], padding=3), ReLU(), Conv2d(weights[1], biases[1], padding=1),
              MaxPool2d(2), Conv2d(weights[2], biases[2], padding=1), ReLU(),
              Conv2d(weights[3], biases[3], padding=2), Conv2d(weights[4], biases[4], padding=(1, 2))]
    model = Model(layers, backend="sparse")
    conv3 = sparsenet._core.active_isa() == "avx2"
    assert [layer._core._uses_conv3 for layer in model.layers if layer.kind == "conv2d"] == [conv3] * 4 + [False]
    for _ in range(2):
        x = rng.standard_normal((batch, 3, 32, 30)).astype(np.float32)
        h = ref_relu(ref_conv2d(x, weights[0], biases[0], 1, pads[0]))
        h = ref_conv2d(h, weights[1], biases[1], 1, pads[1])
        h = h.reshape(batch, 8, 18, 2, 17, 2).max(axis=(3, 5))
        h = ref_relu(ref_conv2d(h, weights[2], biases[2], 1, pads[2]))
        h = ref_conv2d(h, weights[3], biases[3], 1, pads[3])
        assert_close(model(x), ref_conv2d(h, weights[4], biases[4], 1, pads[4]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_with_changing_input_sizes(rng, backend):
    """One layer run on maps of several sizes, wide ones (rows wider than a
    block of the direct convolution) included, and back to an earlier size."""
    weight = sparse_dense_array((5, 2, 3, 3), 0.5, rng)
    bias = rng.standard_normal(5).astype(np.float32)
    second = sparse_dense_array((3, 5, 2, 4), 0.3, rng)
    model = Model([Conv2d(weight, bias, padding=1), ReLU(), Conv2d(second, None)], backend=backend)
    for shape in [(1, 2, 3, 600), (2, 2, 40, 13), (3, 2, 5, 5), (1, 2, 3, 600), (2, 2, 70, 7), (5, 2, 2, 4)]:
        x = rng.standard_normal(shape).astype(np.float32)
        hidden = ref_relu(ref_conv2d(x, weight, bias, 1, 1))
        assert_close(model(x), ref_conv2d(hidden, second, None, 1, 0))


# ------------------------------------------ dense direct convolution (auto only)
@pytest.mark.parametrize("out_channels", [1, 5, 6, 13, 64])
@pytest.mark.parametrize("conv", [
    dict(kernel=(3, 3), padding=1, size=(9, 5)),
    dict(kernel=(5, 5), padding=2, size=(14, 14)),    # mnist_cnn's conv2 geometry
    dict(kernel=(2, 4), padding=0, size=(6, 37)),     # 34 output columns: 16 + 16 + 2, or 32 + 2
    dict(kernel=(3, 3), padding=1, size=(3, 70)),     # 70: 4 x 16 + 6, or 2 x 32 + 6
    dict(kernel=(5, 5), padding=2, size=(5, 28)),     # mnist_cnn's conv1 rows: 16 + 12, or 28 in one
    dict(kernel=(1, 3), padding=(0, 1), size=(3, 16)),
    dict(kernel=(3, 3), padding=1, size=(4, 1)),      # one output column
])
def test_dense_direct_convolution_matches_reference(rng, restore_threads, out_channels, conv):
    """Auto's third choice, pinned: tiles of 6 channels (the last one smaller when
    out_channels is no multiple of 6) x 16 columns, or 32 while more than 16 are
    left (AVX-512), masked tails, fused bias and ReLU, at 1 to 3 threads and
    batches below and above the thread count."""
    weight = sparse_dense_array((out_channels, 5, *conv["kernel"]), 0.6, rng)
    bias = rng.standard_normal(out_channels).astype(np.float32)
    model = Model([Conv2d(weight, bias, padding=conv["padding"]), ReLU()], backend="auto")
    assert pin_dense_direct(model) == 1
    for threads in (1, 2, 3):
        sparsenet.set_num_threads(threads)
        for batch in (1, 2, 5):
            x = rng.standard_normal((batch, 5, *conv["size"])).astype(np.float32)
            assert_close(model(x), ref_relu(ref_conv2d(x, weight, bias, 1, model.layers[0].padding)))
    assert model.layers[0].choices == {}  # pinned: nothing measured


@pytest.mark.parametrize("isa", ISAS)
def test_dense_direct_convolution_on_wide_deep_and_changing_maps(rng, monkeypatch, restore_threads, isa):
    """Both ISAs; a deep layer (input channels in 3 panels, its 23 channel tiles
    in 2 groups), large maps (row blocks, parallel padding), and input sizes
    that change between calls."""
    monkeypatch.setenv("SPARSENET_ISA", isa)
    deep = sparse_dense_array((134, 200, 3, 3), 0.5, rng)
    wide = sparse_dense_array((12, 3, 3, 3), 0.9, rng)
    model = Model([Conv2d(deep, None, padding=1)], backend="auto")
    first = Model([Conv2d(wide, np.ones(12, np.float32), padding=1)], backend="auto")
    monkeypatch.delenv("SPARSENET_ISA")
    assert pin_dense_direct(model) == 1 and pin_dense_direct(first) == 1
    assert model.layers[0]._core.isa == isa
    for threads in (1, 2):
        sparsenet.set_num_threads(threads)
        x = rng.standard_normal((1, 200, 11, 19)).astype(np.float32)
        assert_close(model(x), ref_conv2d(x, deep, None, 1, 1))
        for shape in [(1, 3, 300, 301), (2, 3, 7, 40), (1, 3, 300, 301)]:
            x = rng.standard_normal(shape).astype(np.float32)
            assert_close(first(x), ref_conv2d(x, wide, np.ones(12, np.float32), 1, 1))


def test_only_auto_stride_1_convolutions_run_dense_direct(rng):
    weight = sparse_dense_array((6, 2, 3, 3), 0.8, rng)
    can_run = lambda layer, backend: Model([layer], backend=backend).layers[0]._core._can_run("dense-direct")
    assert can_run(Conv2d(weight, None, padding=1), "auto")
    assert not can_run(Conv2d(weight, None, padding=1), "dense")
    assert not can_run(Conv2d(weight, None, padding=1), "sparse")
    assert not can_run(Conv2d(weight, None, stride=2), "auto")
    assert not can_run(Conv2d(sparse_dense_array((6, 2, 1, 1), 0.8, rng), None), "auto")  # pointwise
    assert not can_run(Conv2d(sparse_dense_array((6, 2, 3, 3), 0.05, rng), None), "auto")  # always sparse
    linear = Model([Linear(sparse_dense_array((8, 8), 0.8, rng), None)], backend="auto").layers[0]._core
    assert not linear._can_run("dense-direct") and linear._can_run("dense")
    with pytest.raises(sparsenet.FormatError, match="cannot run 'dense-direct'"):
        linear._pin_choice("dense-direct")
    dense = Model([Conv2d(weight, None)], backend="dense").layers[0]._core
    with pytest.raises(sparsenet.FormatError, match="only an auto layer can pin a choice; this one is dense"):
        dense._pin_choice("dense")
    with pytest.raises(sparsenet.FormatError, match="not one of: sparse, dense, dense-direct, dense-winograd"):
        dense._pin_choice("direct")


def test_auto_measures_dense_direct_and_winograd_and_can_choose_them(rng, restore_threads):
    """An unpruned mnist_cnn-like convolution: auto times all four choices once
    per input size, and the result matches whichever it kept."""
    sparsenet.set_num_threads(1)
    weight = sparse_dense_array((64, 32, 5, 5), 1.0, rng)
    model = Model([Conv2d(weight, None, padding=2)], backend="auto")
    x = rng.standard_normal((4, 32, 14, 14)).astype(np.float32)
    assert_close(model(x), ref_conv2d(x, weight, None, 1, 2))
    (choice,) = model.layers[0].choices.values()
    assert choice in {"sparse", "dense", "dense-direct", "dense-winograd"}
    assert_close(model(x), ref_conv2d(x, weight, None, 1, 2))  # after a measurement that kept or freed Winograd's weights


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("conv", [
    dict(kernel=3, padding=1, size=(7, 9), channels=(8, 16)),     # F(4x4, 3x3); partial tiles on both axes
    dict(kernel=3, padding=0, size=(13, 70), channels=(9, 13)),   # 17 tiles a row: 3 lane groups, the last one of 1
    dict(kernel=5, padding=2, size=(14, 14), channels=(32, 64)),  # mnist_cnn's conv2, F(2x2, 5x5)
    dict(kernel=5, padding=1, size=(6, 5), channels=(8, 7)),      # 4x3 outputs; a register tile of one channel
    dict(kernel=3, padding=1, size=(40, 41), channels=(20, 30)),  # 20 lane groups in 3 blocks of up to 8
    dict(kernel=3, padding=1, size=(40, 41), channels=(30, 40)),  # blocks of 48 tiles: 32 + 16 columns
    dict(kernel=3, padding=2, size=(1, 2), channels=(8, 6)),      # a map smaller than the kernel, padded
])
def test_dense_winograd_convolution_matches_reference(rng, monkeypatch, restore_threads, isa, conv):
    """Auto's fourth choice, pinned, on both ISAs: Winograd's transforms and
    the products between them against a float64 reference, with and without
    bias and fused ReLU, at 1 to 3 threads and batches below and above the
    thread count (blocks over the workers for a single image, images over
    them for a batch)."""
    monkeypatch.setenv("SPARSENET_ISA", isa)
    cin, cout = conv["channels"]
    weight = sparse_dense_array((cout, cin, conv["kernel"], conv["kernel"]), 0.7, rng)
    bias = rng.standard_normal(cout).astype(np.float32)
    with_relu = Model([Conv2d(weight, bias, padding=conv["padding"]), ReLU()], backend="auto")
    plain = Model([Conv2d(weight, None, padding=conv["padding"])], backend="auto")
    monkeypatch.delenv("SPARSENET_ISA")
    for model in (with_relu, plain):
        assert model.layers[0]._core.isa == isa
        model.layers[0]._core._pin_choice("dense-winograd")
    for threads in (1, 2, 3):
        sparsenet.set_num_threads(threads)
        for batch in (1, 2, 5):
            x = rng.standard_normal((batch, cin, *conv["size"])).astype(np.float32)
            reference = ref_conv2d(x, weight, bias, 1, conv["padding"])
            assert_close(with_relu(x), ref_relu(reference))
            assert_close(plain(x), reference - bias[None, :, None, None])
    assert with_relu.layers[0].choices == {}  # pinned: nothing measured


def test_dense_winograd_agrees_with_its_direct_twin(rng, restore_threads):
    """On one layer, Winograd convolution and dense direct convolution (no
    transforms: every multiply-add of the window) give the same maps to float
    rounding, for inputs far from zero mean too (where the transforms'
    cancellations lose the most)."""
    weight = sparse_dense_array((24, 16, 3, 3), 1.0, rng)
    bias = rng.standard_normal(24).astype(np.float32)
    direct = Model([Conv2d(weight, bias, padding=1)], backend="auto")
    winograd = Model([Conv2d(weight, bias, padding=1)], backend="auto")
    direct.layers[0]._core._pin_choice("dense-direct")
    winograd.layers[0]._core._pin_choice("dense-winograd")
    for offset in (0.0, 10.0):
        x = (rng.standard_normal((2, 16, 23, 31)) + offset).astype(np.float32)
        assert_close(winograd(x), direct(x), rtol=2e-5)


def test_only_auto_stride_1_3x3_and_5x5_convolutions_of_8_channels_run_winograd(rng):
    can_run = lambda weight, backend, **kw: Model([Conv2d(weight, None, **kw)], backend=backend).layers[0]._core._can_run("dense-winograd")
    w3 = sparse_dense_array((6, 8, 3, 3), 0.8, rng)
    assert can_run(w3, "auto", padding=1) and can_run(sparse_dense_array((6, 8, 5, 5), 0.8, rng), "auto")
    assert not can_run(w3, "dense") and not can_run(w3, "sparse")
    assert not can_run(w3, "auto", stride=2)
    assert not can_run(sparse_dense_array((6, 7, 3, 3), 0.8, rng), "auto")  # fewer than 8 input channels
    assert not can_run(sparse_dense_array((6, 8, 3, 5), 0.8, rng), "auto")  # not square
    assert not can_run(sparse_dense_array((6, 8, 7, 7), 0.8, rng), "auto")
    assert not can_run(sparse_dense_array((6, 8, 3, 3), 0.05, rng), "auto")  # always sparse


@pytest.mark.parametrize("pool", [
    dict(kind="max", kernel_size=2, stride=None, padding=0, ceil_mode=False),
    dict(kind="max", kernel_size=3, stride=2, padding=1, ceil_mode=False),
    dict(kind="max", kernel_size=3, stride=2, padding=0, ceil_mode=True),
    dict(kind="max", kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), ceil_mode=True),
    dict(kind="max", kernel_size=3, stride=2, padding=0, ceil_mode=False),  # windows inside: straight loops
    dict(kind="max", kernel_size=(2, 2), stride=(1, 3), padding=0, ceil_mode=False),
    dict(kind="avg", kernel_size=(3, 2), stride=(2, 1), padding=0, ceil_mode=False, count_include_pad=False),
    dict(kind="avg", kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True),
    dict(kind="avg", kernel_size=3, stride=2, padding=1, ceil_mode=False, count_include_pad=True),
    dict(kind="avg", kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kind="avg", kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True),
    dict(kind="avg", kernel_size=(4, 2), stride=(3, 1), padding=(2, 1), ceil_mode=False, count_include_pad=False),
])
@pytest.mark.parametrize("batch", [1, 5])
def test_pooling(rng, pool, batch):
    options = dict(pool)
    kind = options.pop("kind")
    layer = (MaxPool2d if kind == "max" else AvgPool2d)(**options)
    x = rng.standard_normal((batch, 3, 9, 10)).astype(np.float32)
    reference = ref_pool2d(x, kind, pool["kernel_size"], pool["stride"], pool["padding"], pool["ceil_mode"],
                           pool.get("count_include_pad", True))
    assert_close(Model([layer])(x), reference, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", BATCHES)
def test_mlp_layer_sequences(rng, backend, batch):
    """Linear on (N, F) input; no bias; ReLU fused across a Dropout; two ReLUs;
    Softmax on large logits."""
    w1 = sparse_dense_array((40, 33), 0.3, rng)
    w2 = sparse_dense_array((21, 40), 0.5, rng)
    w3 = sparse_dense_array((7, 21), 1.0, rng) * 30
    b1 = rng.standard_normal(40).astype(np.float32)
    b3 = rng.standard_normal(7).astype(np.float32)
    layers = [Linear(w1, b1), Dropout(0.5), ReLU(), Linear(w2), ReLU(), ReLU(), Dropout(), Linear(w3, b3), Softmax()]
    model = Model(layers, backend=backend, input_shape=(33,))
    x = rng.standard_normal((batch, 33)).astype(np.float32)
    hidden = ref_relu(ref_linear(ref_relu(ref_linear(x, w1, b1)), w2, None))
    reference = ref_softmax(ref_linear(hidden, w3, b3))
    assert_close(model(x), reference)
    logits = Model(layers[:-1], backend=backend)(x)
    assert_close(logits, ref_linear(hidden, w3, b3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_models_without_weights(rng, backend):
    x = rng.standard_normal((6, 2, 8, 8)).astype(np.float32)
    assert np.array_equal(Model([Dropout()], backend=backend)(x), x)
    assert np.array_equal(Model([ReLU()])(x), np.maximum(x, 0))
    assert np.array_equal(Model([Flatten()])(x), x.reshape(6, -1))
    features = x.reshape(6, -1) * 10
    assert_close(Model([Softmax()])(features), ref_softmax(features), rtol=1e-5)
    assert_close(Model([Flatten(), Softmax()])(x), ref_softmax(x.reshape(6, -1)), rtol=1e-5)


def test_feature_map_output_and_empty_batch(rng):
    weight = sparse_dense_array((5, 2, 3, 3), 0.5, rng)
    model = Model([Conv2d(weight, None, padding=1), ReLU()])
    x = rng.standard_normal((3, 2, 6, 4)).astype(np.float32)
    assert_close(model(x), ref_relu(ref_conv2d(x, weight, None, 1, 1)))
    empty = model(np.zeros((0, 2, 6, 4), np.float32))
    assert empty.shape == (0, 5, 6, 4) and empty.dtype == np.float32
    fc = Model([Linear(sparse_dense_array((3, 4), 0.5, rng))])
    assert fc(np.zeros((0, 4), np.float32)).shape == (0, 3)


def test_input_conversions(rng):
    """float64, float16, Fortran-ordered, strided and big-endian inputs are converted."""
    layers = small_conv_model_layers(np.random.default_rng(7))
    model = Model(layers, backend="sparse")
    x = rng.standard_normal((3, *SMALL_CONV_INPUT)).astype(np.float32)
    expected = model(x)
    assert np.array_equal(model(x.astype(np.float64)), expected)
    assert np.array_equal(model(np.asfortranarray(x)), expected)
    assert np.array_equal(model(x.astype(">f4")), expected)
    strided = np.zeros((6, *SMALL_CONV_INPUT), np.float32)
    strided[::2] = x
    assert np.array_equal(model(strided[::2]), expected)
    assert np.array_equal(model(x.tolist()), expected)
    half = x.astype(np.float16)
    assert np.array_equal(model(half), model(half.astype(np.float32)))


# ------------------------------------------------------------------ ISAs
def _isa_model(monkeypatch, isa):
    monkeypatch.setenv("SPARSENET_ISA", isa)
    model = sparsenet.models.mnist_cnn(seed=2, backend="sparse")
    fc = Model([Linear(sparse_dense_array((70, 3000), 0.05, np.random.default_rng(3)),
                       np.linspace(-1, 1, 70).astype(np.float32))], backend="sparse")
    monkeypatch.delenv("SPARSENET_ISA")
    return model, fc


@needs_avx2
@pytest.mark.parametrize("batch", [1, 5])
def test_scalar_and_avx2_models_agree(monkeypatch, batch):
    scalar, scalar_fc = _isa_model(monkeypatch, "scalar")
    avx2, avx2_fc = _isa_model(monkeypatch, "avx2")
    assert {core.isa for core in scalar._core_layers if hasattr(core, "isa")} == {"scalar"}
    assert {core.isa for core in avx2._core_layers if hasattr(core, "isa")} == {"avx2"}
    x = input_batch("mnist_cnn", batch)
    assert_close(avx2(x), scalar(x).astype(np.float64), rtol=1e-5)
    assert_close(avx2(x), arch_reference(scalar, "mnist_cnn", x))
    v = np.random.default_rng(4).standard_normal((batch, 3000)).astype(np.float32)
    assert_close(avx2_fc(v), scalar_fc(v).astype(np.float64), rtol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
def test_isa_is_read_at_construction(monkeypatch, isa):
    monkeypatch.setenv("SPARSENET_ISA", isa)
    model = sparsenet.models.lenet5(seed=1)
    other = "avx2" if isa == "scalar" else "scalar"
    if other == "avx2" and not HAS_AVX2:
        monkeypatch.delenv("SPARSENET_ISA")
    else:
        monkeypatch.setenv("SPARSENET_ISA", other)
    # The built layers keep the ISA they were built with.
    assert {core.isa for core in model._core_layers if hasattr(core, "isa")} == {isa}
    x = input_batch("lenet5", 2)
    assert_close(model(x), arch_reference(model, "lenet5", x))


@pytest.mark.parametrize("isa", ISAS)
def test_kernel_info_when_forced(monkeypatch, isa):
    monkeypatch.setenv("SPARSENET_ISA", isa)
    info = sparsenet.kernel_info()
    assert info["isa"] == isa
    assert info["forced_by"] == "SPARSENET_ISA"
    assert info["kernels"]["csrmv"] == [f"f32_csrmv_u16_{isa}", f"f32_csrmv_u32_{isa}"]
    avx512 = isa == "avx2" and sparsenet._core.avx512_kernels()
    mm = "avx512" if avx512 else isa
    assert info["kernels"]["csrmm"] == [f"f32_csrmm_u16_{mm}", f"f32_csrmm_u32_{mm}"]
    assert info["avx512_kernels"] == avx512
    expected_l1 = "f32_csrmv_u16_l1_avx512" if avx512 else "f32_csrmv_u16_l1_avx2"
    assert info["kernels"]["csrmv_x_loads"] == ([expected_l1] if isa == "avx2" else [])
    assert info["kernels"]["conv3"] == (["f32_conv3_avx512"] if avx512 else ["f32_conv3_avx2"] if isa == "avx2" else [])
    assert info["kernels"]["sellmv"] == (["f32_sellmv_avx512"] if avx512 and sparsenet._core._sellmv_win() else [])
    assert info["kernels"]["conv_dense"] == [f"f32_conv_dense_{isa}"] + (["f32_conv_dense_avx512"] if avx512 else [])
    assert info["kernels"]["transpose"] == [f"f32_transpose_{isa}"]
    assert "direct convolution" in info["kernels"]["conv2d"]
    assert info["avx512_full_width"] is bool(avx512 and sparsenet._core._cpu_full_width_avx512())


def test_avx512_kernels_can_be_switched_off():
    """SPARSENET_AVX512=0 (read once per process) runs the avx2 table's AVX2
    kernels alone, as on a CPU without AVX-512."""
    code = ("import sparsenet; i = sparsenet.kernel_info(); "
            "print(i['avx512_kernels'], i['avx512_full_width'], sparsenet._core._cpu_full_width_avx512(), "
            "i['kernels']['conv3'], i['kernels']['csrmv_x_loads'][:1], "
            "i['kernels']['sellmv'], i['kernels']['conv_dense'], i['kernels']['csrmm'])")
    env = {**os.environ, "SPARSENET_AVX512": "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("SPARSENET_ISA", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split("[")[0].split() == ["False", "False", "False"]
    assert "f32_conv3_avx512" not in out and "f32_csrmv_u16_l1_avx512" not in out and "sellmv" not in out
    assert "f32_conv_dense_avx512" not in out and "f32_csrmm_u16_avx512" not in out
    assert ("f32_conv3_avx2" in out) == sparsenet._core.cpu_has_avx2_fma()


AVX2_CONV3_SCRIPT = '''
import sys
import numpy as np
import sparsenet
from sparsenet import Conv2d, Model, ReLU
case = np.load(sys.argv[1])
assert not sparsenet.kernel_info()["avx512_kernels"]
model = Model([Conv2d(case["w0"], case["b0"], padding=1), ReLU(), Conv2d(case["w1"], case["b1"], padding=1)],
              backend="sparse")
assert [layer._core._uses_conv3 for layer in model.layers if layer.kind == "conv2d"] == [True, True]
out = {}
for threads in (1, 2):
    sparsenet.set_num_threads(threads)
    out[f"y{threads}"] = model(case["x"])
    i = 0
    while f"sx{i}" in case:  # single layers of assorted shapes
        bias = case[f"sb{i}"] if f"sb{i}" in case else None
        layer = Conv2d(case[f"sw{i}"], bias, padding=tuple(int(v) for v in case[f"spad{i}"]))
        single = Model([layer], backend="sparse")
        assert single.layers[0]._core._uses_conv3
        out[f"y{threads}_{i}"] = single(case[f"sx{i}"])
        i += 1
np.savez(sys.argv[2], **out)
'''


@pytest.mark.skipif(not sparsenet._core.cpu_has_avx2_fma(), reason="this CPU lacks AVX2+FMA")
def test_avx2_conv3_kernel_in_whole_layers(rng, tmp_path):
    """On CPUs with AVX-512 the suite's 3-wide convolutions run conv3's
    AVX-512 kernel; here the AVX2 one (SPARSENET_AVX512=0) runs whole layers in
    a subprocess: 96 input channels in several panels that accumulate, rows of
    30 + 2 padded to 32 and 23 rows (partial last tiles), bias and fused ReLU,
    one and two threads; then single layers of assorted shapes (kernel heights
    1-5, pads 0-2, maps from 1x1 to 70 wide, 1-3 images, densities 5-100 %)."""
    w0, w1 = sparse_dense_array((24, 96, 3, 3), 0.3, rng), sparse_dense_array((10, 24, 3, 3), 0.5, rng)
    b0, b1 = rng.standard_normal(24).astype(np.float32), rng.standard_normal(10).astype(np.float32)
    x = rng.standard_normal((2, 96, 23, 30)).astype(np.float32)
    arrays = {"x": x, "w0": w0, "b0": b0, "w1": w1, "b1": b1}
    singles = []
    for i in range(12):
        kh, pad = int(rng.choice([1, 2, 3, 5])), (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        cin, cout = int(rng.choice([1, 3, 17, 70])), int(rng.choice([1, 5, 16]))
        h = int(rng.integers(max(1, kh - 2 * pad[0]), 21))
        w = int(rng.integers(max(1, 3 - 2 * pad[1]), 71))
        weight = sparse_dense_array((cout, cin, kh, 3), float(rng.choice([0.05, 0.5, 1.0])), rng)
        bias = rng.standard_normal(cout).astype(np.float32) if i % 2 else None
        arrays.update({f"sx{i}": rng.standard_normal((int(rng.integers(1, 4)), cin, h, w)).astype(np.float32),
                       f"sw{i}": weight, f"spad{i}": np.array(pad)})
        if bias is not None:
            arrays[f"sb{i}"] = bias
        singles.append((weight, bias, pad))
    np.savez(tmp_path / "case.npz", **arrays)
    env = {**os.environ, "SPARSENET_AVX512": "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("SPARSENET_ISA", None)
    subprocess.run([sys.executable, "-c", AVX2_CONV3_SCRIPT, str(tmp_path / "case.npz"), str(tmp_path / "out.npz")],
                   env=env, check=True)
    expected = ref_conv2d(ref_relu(ref_conv2d(x, w0, b0, 1, 1)), w1, b1, 1, 1)
    out = np.load(tmp_path / "out.npz")
    assert_close(out["y1"], expected)
    assert_close(out["y2"], expected)
    for i, (weight, bias, pad) in enumerate(singles):
        for threads in (1, 2):
            assert_close(out[f"y{threads}_{i}"], ref_conv2d(arrays[f"sx{i}"], weight, bias, 1, pad))


def test_kernel_info_by_default(no_isa_env):
    info = sparsenet.kernel_info()
    assert set(info) == {"isa", "forced_by", "cpu_avx2_fma", "avx512_kernels", "avx512_full_width", "kernels",
                         "last_level_cache_bytes", "blas", "blas_core_forced", "num_threads"}
    assert isinstance(info["last_level_cache_bytes"], int) and info["last_level_cache_bytes"] >= 0
    assert sparsenet._core._csrmv_stream_bytes() == info["last_level_cache_bytes"] // 2
    assert info["forced_by"] is None
    assert info["cpu_avx2_fma"] is HAS_AVX2
    assert info["isa"] == ("avx2" if HAS_AVX2 else "scalar")
    assert "OpenBLAS" in info["blas"]
    assert info["num_threads"] == sparsenet.get_num_threads() >= 1
    assert sparsenet.cuda_available() is False
    model = sparsenet.models.lenet_300_100()
    assert {core.isa for core in model._core_layers if hasattr(core, "isa")} == {info["isa"]}


def test_imports_where_openblas_sits_in_another_site_packages(tmp_path):
    """An installed _core finds libscipy_openblas.so through an RPATH into its
    own site-packages ($ORIGIN/../scipy_openblas32/lib); a copy of the package
    in a directory without that beside it (what a --system-site-packages venv
    or a --user install gives) still imports and runs, by loading the library
    through scipy_openblas32 first."""
    import shutil
    package = os.path.dirname(sparsenet.__file__)
    shutil.copytree(package, tmp_path / "sparsenet", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import numpy as np, sparsenet; m = sparsenet.models.lenet_300_100(); "
            "print(m(np.zeros((1, 784), np.float32)).shape)")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 10)"


def test_kernel_info_names_a_forced_blas_core(monkeypatch):
    """OPENBLAS_CORETYPE (set on some hosts) is reported: it may hold the dense
    baseline to narrower kernels than the CPU has."""
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert sparsenet.kernel_info()["blas_core_forced"] == "Haswell"
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert sparsenet.kernel_info()["blas_core_forced"] is None


def test_empty_isa_variable_means_unset(monkeypatch):
    monkeypatch.setenv("SPARSENET_ISA", "")
    assert sparsenet.kernel_info()["forced_by"] is None
    assert sparsenet.kernel_info()["isa"] == ("avx2" if HAS_AVX2 else "scalar")


def test_isa_variable_ignores_case(monkeypatch):
    monkeypatch.setenv("SPARSENET_ISA", "Scalar")
    assert sparsenet.kernel_info()["isa"] == "scalar"


def test_bad_isa_variable(monkeypatch):
    monkeypatch.setenv("SPARSENET_ISA", "avx512")
    with pytest.raises(sparsenet.FormatError, match="SPARSENET_ISA='avx512' is not one of: scalar, avx2"):
        sparsenet.kernel_info()
    with pytest.raises(sparsenet.FormatError, match="SPARSENET_ISA"):
        sparsenet.models.lenet_300_100()


@pytest.mark.skipif(HAS_AVX2, reason="only on a CPU without AVX2+FMA")
def test_forcing_avx2_without_cpu_support(monkeypatch):  # pragma: no cover - needs an old CPU
    monkeypatch.setenv("SPARSENET_ISA", "avx2")
    with pytest.raises(sparsenet.FormatError, match="SPARSENET_ISA=avx2 but this CPU lacks AVX2"):
        sparsenet.models.lenet5()


# --------------------------------------------------------------- threads
@pytest.mark.parametrize("backend", ["sparse", "dense"])
def test_thread_count_does_not_change_results(restore_threads, backend):
    models = [sparsenet.models.mnist_cnn(seed=4, backend=backend), sparsenet.models.lenet_300_100(seed=4, backend=backend)]
    inputs = [input_batch("mnist_cnn", 9), input_batch("lenet_300_100", 40)]
    outputs = {}
    for threads in (1, 2, 3):
        sparsenet.set_num_threads(threads)
        assert sparsenet.get_num_threads() == threads
        assert sparsenet.kernel_info()["num_threads"] == threads
        outputs[threads] = [model(x) for model, x in zip(models, inputs)]
    for threads in (2, 3):
        for got, expected in zip(outputs[threads], outputs[1]):
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    assert_close(outputs[2][0], arch_reference(models[0], "mnist_cnn", inputs[0]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("batch", [2, 7, 16])
def test_feature_map_layers_image_by_image(rng, restore_threads, backend, threads, batch):
    """Batches of at least two images per worker run their leading convolutions
    and pools image by image (model.cc); the maps must land at each image's
    place, whether the last of those layers writes into the model's output or
    into the buffer the fully connected layers read."""
    sparsenet.set_num_threads(threads)
    w1 = sparse_dense_array((6, 3, 3, 3), 0.5, rng)
    w2 = sparse_dense_array((5, 6, 3, 3), 0.4, rng)
    w3 = sparse_dense_array((4, 5 * 2 * 2), 0.5, rng)
    b1, b2, b3 = (rng.standard_normal(k).astype(np.float32) for k in (6, 5, 4))
    features = [Conv2d(w1, b1, padding=1), ReLU(), MaxPool2d(2), Conv2d(w2, b2, padding=1), ReLU()]
    x = rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
    maps = ref_relu(ref_conv2d(ref_pool2d(ref_relu(ref_conv2d(x, w1, b1, 1, 1)), "max", 2, 2, 0, False),
                               w2, b2, 1, 1))
    assert_close(Model(features, backend=backend)(x), maps)
    pooled = ref_pool2d(maps, "max", 2, 2, 0, False)
    classifier = Model(features + [MaxPool2d(2), Flatten(), Linear(w3, b3)], backend=backend)
    assert_close(classifier(x), ref_linear(pooled.reshape(batch, -1), w3, b3))


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("batch", [64, 100, 257])
def test_few_rows_many_columns_split_across_threads(restore_threads, rng, threads, batch):
    """A layer with fewer rows than tasks gets its batch columns split in blocks of 32."""
    sparsenet.set_num_threads(threads)
    weight = sparse_dense_array((5, 3000), 0.4, rng)
    bias = rng.standard_normal(5).astype(np.float32)
    x = rng.standard_normal((batch, 3000)).astype(np.float32)
    reference = ref_relu(ref_linear(x, weight, bias))
    for backend in ("sparse", "dense"):
        assert_close(Model([Linear(weight, bias), ReLU()], backend=backend)(x), reference)


def test_thread_count_from_the_environment():
    """SPARSENET_NUM_THREADS sets the initial thread count (read once, at start)."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(sparsenet.__file__)))
    pythonpath = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    environment = dict(os.environ, SPARSENET_NUM_THREADS="3", PYTHONPATH=pythonpath)
    code = "import sparsenet; print(sparsenet.get_num_threads(), sparsenet.kernel_info()['num_threads'])"
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.split() == ["3", "3"]


def test_set_num_threads_refuses_counts_out_of_range(restore_threads):
    """0 or negative, and above 1,024 (10,000 threads took 16 s and 5 GB)."""
    for bad in (0, -1, 1025, 100_000):
        with pytest.raises(ValueError, match="set_num_threads: need 1 to 1024 threads"):
            sparsenet.set_num_threads(bad)
    assert sparsenet.get_num_threads() == restore_threads


def test_summary_and_counts():
    model = sparsenet.models.lenet5()
    text = model.summary()
    for name in ("conv1", "conv2", "fc1", "fc2", "total", "lenet5"):
        assert name in text
    assert model.nnz == sum(layer.nnz for layer in model.layers)
    assert model.parameters == 20 * 25 + 20 + 50 * 500 + 50 + 800 * 500 + 500 + 500 * 10 + 10
    assert "lenet5" in repr(model)


def test_auto_choices_are_shared_by_equal_layers(tmp_path):
    """Two loads of one file time nothing twice and choose alike, so their outputs are identical."""
    model = sparsenet.models.mnist_cnn(densities=0.3, seed=12)  # every layer in auto's measured range
    model.save(tmp_path / "m.npz")
    first, second = Model.load(tmp_path / "m.npz"), Model.load(tmp_path / "m.npz")
    x = input_batch("mnist_cnn", 3)
    assert np.array_equal(first(x), second(x))
    for a, b in zip(first.layers, second.layers):
        if isinstance(a, (Conv2d, Linear)):
            assert a.backend == "auto" and a.choices == b.choices and len(a.choices) == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["linear", "conv2d", "linear-u32"])
def test_built_layers_give_their_weight_back_exactly(rng, backend, kind):
    """A layer built into an engine that keeps its CSR weight (sparse, auto)
    drops its own int64 copy and rebuilds ``weight`` from the engine: the same
    arrays, explicit zeros and duplicate column indices included (rows given
    unsorted are sorted, stably, by SparseWeight and by the engine alike). A
    dense engine keeps no CSR, so the layer keeps its own."""
    rows, cols = {"linear": (7, 40), "conv2d": (5, 3 * 3 * 3), "linear-u32": (3, 70_000)}[kind]
    indptr = np.zeros(rows + 1, dtype=np.int64)
    indices, data = [], []
    for r in range(rows):
        picked = rng.choice(cols, size=min(cols, 6), replace=False)[::-1]  # unsorted
        indices += list(picked) + [picked[0]]  # a duplicate
        data += list(rng.standard_normal(len(picked)).astype(np.float32)) + [0.0]  # an explicit zero
        indptr[r + 1] = len(indices)
    indices, data = np.array(indices, dtype=np.int64), np.array(data, dtype=np.float32)
    shape = (rows, cols) if kind != "conv2d" else (rows, 3, 3, 3)
    weight = sparsenet.SparseWeight(shape, indptr, indices, data)
    for r in range(rows):  # each row sorted by column, stably: the duplicate follows its twin
        part = slice(indptr[r], indptr[r + 1])
        order = np.argsort(indices[part], kind="stable")
        assert np.array_equal(weight.indices[part], indices[part][order])
        assert np.array_equal(weight.data[part], data[part][order])
    indices, data = weight.indices.copy(), weight.data.copy()
    bias = rng.standard_normal(rows).astype(np.float32)
    layer = Linear(weight, bias) if kind != "conv2d" else Conv2d(weight, bias, padding=1)
    input_shape = (cols,) if kind != "conv2d" else (3, 6, 6)
    model = Model([layer], backend=backend, input_shape=input_shape)
    assert (layer._weight is None) == (backend != "dense")
    summary_facts = (layer.shape, layer.nnz, layer.density, layer.storage, layer.stored_bytes, layer.dense_bytes)
    model.summary()
    assert layer._weight_ref is None  # the facts need no arrays
    back = layer.weight
    assert back.shape == shape and back.indptr.dtype == np.int64 and back.indices.dtype == np.int64
    for got, want in ((back.indptr, indptr), (back.indices, indices), (back.data, data)):
        assert np.array_equal(got, want)
    assert layer.weight is back  # cached while held
    assert summary_facts == (back.shape, back.nnz, back.density, back.storage(layer.name),
                             back.stored_bytes(layer.name) + bias.nbytes, back.dense_bytes() + bias.nbytes)
    x = rng.standard_normal((2, *input_shape)).astype(np.float32)
    expected = model(x)
    # Built again (the weight now comes from the first engine) and on another backend.
    for other in BACKENDS:
        again = Model([layer], backend=other, input_shape=input_shape)
        assert_close(again(x), expected)
        assert (layer._weight is None) == (other != "dense")
    del back
    assert np.array_equal(layer.weight.indices, indices)


@pytest.mark.parametrize("density", [0.08, 0.4])
@pytest.mark.parametrize("width, height", [(8, 1), (16, 8), (16, 13), (24, 20), (32, 4), (56, 9), (112, 6),
                                           (20, 9), (28, 7)])
def test_conv3_on_rows_without_padding_columns(rng, width, height, density):
    """Where the conv3 kernel masks the neighbours past a row's ends
    (kernel_info's avx512_kernels), 3-wide kernels padded by one column on maps
    a multiple of 8 wide take the image without padding columns: each output
    one float earlier in its block, the block's first at the float before it,
    its last (a whole tile's last but one when the block fills whole tiles:
    16x8, 32x4, 112x6 in 4-row blocks) finished by the layer. Rows of 24 and
    32 floats (24x20, 32x4; padded, 20x9 and 28x7) take two tiles per kernel
    call (kConv3DoubleTileRows in layers.cc). Kernel heights 1-3,
    row pads 0-1, bias and fused ReLU, 1 and 2 threads (one image: its blocks
    and chunks of output channels spread over the workers); elsewhere the padded
    layout runs the same shapes. At 8 % few nonzeros share a kernel row and
    the plan gives one-column entries only (kJointMinShare in layers.cc)."""
    for kh, pad_h, batch in ((3, 1, 1), (3, 1, 2), (1, 0, 2), (2, 1, 1)):
        weight = sparse_dense_array((32, 40, kh, 3), density, rng)
        bias = rng.standard_normal(32).astype(np.float32)
        x = rng.standard_normal((batch, 40, height, width)).astype(np.float32)
        model = Model([Conv2d(weight, bias, padding=(pad_h, 1)), ReLU()], backend="sparse")
        expected = ref_relu(ref_conv2d(x, weight, bias, 1, (pad_h, 1)))
        for threads in (1, 2):
            sparsenet.set_num_threads(threads)
            assert_close(model(x), expected)


@pytest.mark.parametrize("backend", ["sparse", "auto"])
def test_conv3_entries_with_duplicate_and_zero_nonzeros(rng, backend):
    """conv3 plans join a kernel row's nonzeros into one entry (kernels.h); a
    duplicate column index starts another entry rather than overwrite its twin,
    and explicit zeros are kept: rows full of both, 1-3 nonzeros per kernel
    row, against the dense sum of the duplicates."""
    out_c, in_c = 6, 40
    indptr, indices, data = [0], [], []
    for _ in range(out_c):
        row = []
        for c in range(in_c):
            for i in range(3):
                for j in sorted(rng.choice(3, size=int(rng.integers(0, 4)), replace=False)):
                    row += [(c * 3 + i) * 3 + j] * int(rng.integers(1, 3))  # some twice
        indices += row
        data += [0.0 if rng.random() < 0.1 else float(v) for v in rng.standard_normal(len(row))]
        indptr.append(len(indices))
    weight = sparsenet.SparseWeight((out_c, in_c, 3, 3), np.array(indptr), np.array(indices),
                                    np.array(data, np.float32))
    bias = rng.standard_normal(out_c).astype(np.float32)
    x = rng.standard_normal((2, in_c, 9, 21)).astype(np.float32)
    model = Model([Conv2d(weight, bias, padding=1)], backend=backend, input_shape=x.shape[1:])
    for threads in (1, 2):
        sparsenet.set_num_threads(threads)
        assert_close(model(x), ref_conv2d(x, weight.to_dense(), bias, 1, 1))


@pytest.mark.parametrize("cols", [25_088, 70_000])
def test_engine_sorts_unsorted_rows_of_a_wide_layer(rng, cols):
    """The engine's own CSR constructor sorts each row (a C++ caller or the .npz
    loader may hand it unsorted rows): a Linear wider than L1 splits its rows
    into column slices for batch 1, which needs them in column order. Before,
    unsorted rows gave wrong sums there. Such a layer keeps its nonzeros only
    in its two panel layouts and reassembles the CSR on demand: exactly."""
    rows = 16
    dense = sparse_dense_array((rows, cols), 0.05, rng)
    weight = sparsenet.SparseWeight.from_dense(dense)
    indices, data = weight.indices.copy(), weight.data.copy()
    for r in range(rows):  # reverse every row
        part = slice(weight.indptr[r], weight.indptr[r + 1])
        indices[part], data[part] = indices[part][::-1], data[part][::-1]
    for backend in ("sparse", "auto"):
        core = sparsenet._core.Linear("fc", "fc.weight", rows, cols, weight.indptr, indices, data, None, backend)
        for batch in (1, 3, 70):
            x = rng.standard_normal((batch, cols)).astype(np.float32)
            assert_close(sparsenet._core.Model([core]).forward(x), ref_linear(x, dense, None))
        indptr_back, indices_back, data_back = core.weight_arrays()
        assert np.array_equal(indptr_back, weight.indptr)
        assert np.array_equal(indices_back, weight.indices) and np.array_equal(data_back, weight.data)


@pytest.mark.parametrize("kind", ["linear", "conv2d"])
def test_auto_runs_layers_at_the_always_sparse_density_sparse(kind):
    """Layers at most AUTO_SPARSE_DENSITY dense, counted in nonzeros (so that a
    layer pruned to round(10 % of its size) counts as 10 %), run sparse with no
    dense copy; one nonzero more and auto keeps both forms and measures."""
    shape = (7, 13) if kind == "linear" else (5, 3, 3, 3)
    size = int(np.prod(shape))
    limit = int(np.ceil(sparsenet._core.AUTO_SPARSE_DENSITY[kind] * size))
    for nnz, backend in ((limit, "sparse"), (limit + 1, "auto")):
        flat = np.zeros(size, np.float32)
        flat[np.linspace(0, size - 1, nnz).astype(int)] = 1.0
        layer = Linear(flat.reshape(shape)) if kind == "linear" else Conv2d(flat.reshape(shape), padding=1)
        assert layer.nnz == nnz
        Model([layer], backend="auto")
        assert layer.backend == backend, (nnz, size)


def test_a_built_model_is_read_only(tmp_path):
    """The engine holds its own copy of every weight and setting: a change made
    after the build would show in save() but not in forward(), so the saved
    file could differ from the model that ran. Layers list, backend, layer
    settings and biases are read-only once built; a new Model over the same
    layers (another backend) and prune's copies still work."""
    model = sparsenet.models.lenet_300_100(seed=3)
    x = np.random.default_rng(0).random((2, 784), dtype=np.float32)
    y = model(x)
    with pytest.raises(AttributeError):
        model.layers.append(sparsenet.Softmax())
    with pytest.raises(AttributeError):
        model.backend = "dense"
    fc = next(layer for layer in model.layers if layer.name == "fc1")
    with pytest.raises(ValueError, match="read-only"):
        fc.bias[:] = 100
    with pytest.raises(AttributeError, match=r"linear layer 'fc1': 'bias' cannot change once a Model has built"):
        fc.bias = None
    with pytest.raises(AttributeError, match="'name' cannot change"):
        fc.name = "other"
    conv = sparsenet.models.lenet5(seed=1)
    first_conv = next(layer for layer in conv.layers if isinstance(layer, Conv2d))
    pool = next(layer for layer in conv.layers if isinstance(layer, MaxPool2d))
    with pytest.raises(AttributeError, match="'padding' cannot change"):
        first_conv.padding = (2, 2)
    with pytest.raises(AttributeError, match="'stride' cannot change"):
        pool.stride = (1, 1)
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(sparsenet.Model.load(tmp_path / "m.npz")(x), y)
    dense = sparsenet.Model(model.layers, backend="dense")
    np.testing.assert_allclose(dense(x), y, rtol=1e-4, atol=1e-5)
    assert dense.backend == "dense" and fc.backend == "dense"
    pruned = sparsenet.prune.prune_model(conv, 0.5)
    assert all(new is not old for new, old in zip(pruned.layers, conv.layers))
    assert next(layer for layer in pruned.layers if isinstance(layer, Conv2d)).nnz < first_conv.nnz
    assert pruned(np.zeros((1, 1, 28, 28), np.float32)).shape == (1, 10)


def test_model_indexing_and_reprs():
    model = sparsenet.models.lenet5(seed=2)
    assert len(model) == len(model.layers) and model["fc1"] is model.layers[5] and model[-1] is model.layers[-1]
    with pytest.raises(KeyError, match="no layer named 'fc9'"):
        model["fc9"]
    assert repr(model["conv1"]) == ("Conv2d(shape=(20, 1, 5, 5), nnz=330, density=66.00%, stride=[1, 1], "
                                    "padding=[0, 0], name='conv1')")
    assert repr(model["conv1"].weight) == "SparseWeight(shape=(20, 1, 5, 5), nnz=330, density=66.00%)"
    # prune's threshold rules take layer.weight as it comes
    assert sparsenet.prune.prune_by_std(model["conv1"].weight, 1.0).shape == (20, 1, 5, 5)


def test_summary_shows_what_auto_chose():
    model = sparsenet.models.lenet5(seed=1)
    assert "auto (not run yet)" in model.summary()
    model(np.zeros((1, 1, 28, 28), np.float32))
    summary = model.summary()
    assert "auto (not run yet)" not in summary and "auto: " in summary


def test_auto_choices_are_keyed_by_input_size_and_batch_bucket(restore_threads):
    """Conv2d's keys come back as (height, width, batch bucket). Two workers:
    a batch of 3 runs layer by layer (fewer than two images per worker)."""
    sparsenet.set_num_threads(2)
    model = sparsenet.models.lenet5(seed=1)
    model(np.zeros((1, 1, 28, 28), np.float32))
    model(np.zeros((3, 1, 28, 28), np.float32))
    assert set(model["conv1"].choices) == {(28, 28, 1), (28, 28, 3)}
    assert set(model["fc2"].choices) <= {1, 3}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", [1, 3, 17])
def test_global_average_pool_runs_any_map_size(rng, restore_threads, tmp_path, backend, batch):
    """GlobalAvgPool2d averages each whole map whatever its size (the importers'
    x.mean((2, 3)), AdaptiveAvgPool2d(1), GlobalAveragePool): one model run at
    several sizes against the NumPy reference, and through both loaders."""
    conv = Conv2d(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), None, padding=1, name="conv")
    fc = Linear(rng.standard_normal((4, 6)).astype(np.float32), np.zeros(4, np.float32), name="fc")
    model = Model([conv, ReLU(), sparsenet.GlobalAvgPool2d(name="gap"), Flatten(), fc], backend=backend)
    for threads in (1, 2):
        sparsenet.set_num_threads(threads)
        for size in [(5, 5), (8, 13), (1, 1), (30, 7)]:
            x = rng.standard_normal((batch, 3, *size)).astype(np.float32)
            np.testing.assert_allclose(model(x), reference_forward(model.layers, x), rtol=1e-5, atol=1e-5)
    assert model.output_shape((3, 9, 4)) == (4,)
    model.save(tmp_path / "gap.npz")
    x = rng.standard_normal((batch, 3, 11, 6)).astype(np.float32)
    expected = reference_forward(model.layers, x)
    np.testing.assert_allclose(Model.load(tmp_path / "gap.npz", backend=backend)(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sparsenet._core.load_model(str(tmp_path / "gap.npz"), backend).forward(x), expected,
                               rtol=1e-5, atol=1e-5)
    assert "globalavgpool2d" in model.summary()
