"""Bad input of every kind raises a typed ValueError subclass whose message
names the layer, the key and the shapes, and never crashes the process."""

from __future__ import annotations

import json
import os
import struct
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

import sparsenet
from sparsenet import (Conv2d, Flatten, FormatError, InputError, Linear, MaxPool2d, Model, ModelError, ReLU,
                       ShapeError, Softmax, SparseWeight, WeightError, _core)

from conftest import graph_of, read_npz, sparse_dense_array, with_graph, write_npz, zip_member_data_offset


def test_error_hierarchy():
    for cls in (ShapeError, WeightError, FormatError, InputError):
        assert issubclass(cls, ModelError) and issubclass(cls, ValueError)
        assert cls.__module__ == "sparsenet"
    assert issubclass(ModelError, ValueError)


@pytest.fixture(scope="module")
def lenet5():
    return sparsenet.models.lenet5(seed=0)


@pytest.fixture
def saved(tmp_path):
    """A small saved model: conv (CSR), flatten, linear (CSR); its path and arrays."""
    rng = np.random.default_rng(5)
    model = Model([Conv2d(sparse_dense_array((40, 3, 3, 3), 0.2, rng), np.zeros(40, np.float32), name="conv"),
                   ReLU(name="relu"), Flatten(name="flat"),
                   Linear(sparse_dense_array((10, 40 * 4 * 4), 0.1, rng), np.ones(10, np.float32), name="fc")],
                  input_shape=(3, 6, 6), name="small")
    path = tmp_path / "model.npz"
    model.save(path)
    return path, read_npz(path)


def load_arrays(tmp_path, arrays, **options):
    path = tmp_path / "bad.npz"
    write_npz(path, arrays)
    return Model.load(path, **options)


# ------------------------------------------------------------ model input
@pytest.mark.parametrize("shape,match", [
    ((2, 1, 32, 32), r"input of shape \(2, 1, 32, 32\): linear layer 'fc1': expects 800 input features "
                     r"\(weight shape \(500, 800\)\) but its input has per-sample shape \(1250,\)"),
    ((2, 3, 28, 28), r"conv2d layer 'conv1': expects a feature map of 1 channels .* per-sample shape \(3, 28, 28\)"),
    ((2, 1, 4, 4), r"conv2d layer 'conv1': kernel \(5, 5\) with padding \(0, 0\) does not fit input \(1, 4, 4\)"),
    ((2, 784), r"conv2d layer 'conv1': expects a feature map .* per-sample shape \(784,\)"),
    ((2, 1, 0, 28), r"non-positive dimension: \(1, 0, 28\)"),
])
def test_wrong_input_shape(lenet5, shape, match):
    with pytest.raises(ShapeError, match=match):
        lenet5(np.zeros(shape, np.float32))


@pytest.mark.parametrize("shape,match", [
    ((1, 28, 28), r"input of shape \(1, 28, 28\) must be \(N, C, H, W\) or \(N, F\); add a batch dimension"),
    ((784,), r"input of shape \(784,\) must be .*add a batch dimension"),
    ((1, 1, 1, 28, 28), r"input of shape \(1, 1, 1, 28, 28\) must be \(N, C, H, W\) or \(N, F\)"),
    ((), r"input of shape \(\) must be"),
])
def test_wrong_input_ndim(lenet5, shape, match):
    with pytest.raises(ShapeError, match=match):
        lenet5(np.zeros(shape, np.float32))


@pytest.mark.parametrize("value", [
    np.zeros((2, 1, 28, 28), np.int32), np.zeros((2, 1, 28, 28), np.uint8), np.zeros((2, 1, 28, 28), bool),
    np.zeros((2, 1, 28, 28), np.complex64), np.zeros((2, 1, 28, 28), object), np.array("abc"), None,
])
def test_non_float_input(lenet5, value):
    with pytest.raises(InputError, match=rf"input dtype {np.asarray(value).dtype} is not floating point"):
        lenet5(value)


def test_ragged_input(lenet5):
    with pytest.raises(InputError, match="cannot be converted"):
        lenet5([[[[0.0] * 28] * 28], [[[0.0] * 27] * 28]])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_input(lenet5, bad, dtype):
    x = np.zeros((3, 1, 28, 28), dtype)
    x[2, 0, 5, 7] = bad
    with pytest.raises(InputError, match=r"input of shape \(3, 1, 28, 28\) contains NaN or Inf"):
        lenet5(x)


def test_all_finite_checks_every_entry():
    """The input check (_core._all_finite, integer tests of the exponent bits):
    each non-finite value found at every position of arrays of 0-70 entries
    (vector body and tail), finite extremes and NaN payloads told apart."""
    from sparsenet import _core
    edge = np.array([0.0, -0.0, np.finfo(np.float32).max, -np.finfo(np.float32).max,
                     np.finfo(np.float32).tiny, 1e-45, -1e-45], np.float32)
    assert _core._all_finite(edge)
    assert _core._all_finite(np.zeros(0, np.float32))
    payload_nan = np.array([0x7FC00001, 0xFF800001, 0x7F800001], np.uint32).view(np.float32)
    for bad in [np.nan, np.inf, -np.inf, *payload_nan]:
        for n in (1, 7, 8, 9, 31, 70):
            for i in range(n):
                x = np.ones(n, np.float32)
                x[i] = bad
                assert not _core._all_finite(x), (bad, n, i)
                assert not _core._all_finite(x.reshape(1, n))
    assert _core._all_finite(np.ones((3, 5, 7), np.float32))


def test_float64_overflowing_float32_input(lenet5):
    x = np.zeros((1, 1, 28, 28))
    x[0, 0, 0, 0] = 1e300  # finite in float64, Inf once converted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's note about the overflowing cast
        with pytest.raises(InputError, match="contains NaN or Inf"):
            lenet5(x)


# ------------------------------------------------------ CSR invariants
CONTEXT = "linear layer 'fc' key 'fc.weight'"


I64 = np.int64


@pytest.mark.parametrize("indptr,indices,data,match", [
    ([1, 1, 2, 3], [0, 1, 2], [1, 2, 3], r"indptr\[0\] is 1, expected 0"),
    ([0, 2, 1, 3], [0, 1, 2], [1, 2, 3], r"indptr decreases at row 1 \(2 -> 1\)"),
    ([0, 1, 2, 2], [0, 1, 2], [1, 2, 3], r"indptr\[-1\] is 2 but there are 3 nonzeros"),
    ([0, 1, 2, 4], [0, 1, 2], [1, 2, 3], r"indptr\[-1\] is 4 but there are 3 nonzeros"),
    ([0, 1, 2, 3], [0, 4, 2], [1, 2, 3], r"column index 4 at position 1 is out of range \[0, 4\)"),
    ([0, 1, 2, 3], [0, 1, -1], [1, 2, 3], r"column index -1 at position 2 is out of range \[0, 4\)"),
    ([0, 1, 2], [0, 1], [1, 2], r"indptr has 3 entries, expected rows \+ 1 = 4 for shape \(3, 4\)"),
    ([0, 1, 2, 3, 3], [0, 1, 2], [1, 2, 3], r"indptr has 5 entries, expected rows \+ 1 = 4"),
    ([0, 1, 2, 3], [0, 1], [1, 2, 3], r"indices has 2 entries but data has 3"),
    ([0, 1, 2, 3], [0, 1, 2], [1, np.nan, 3], r"value at position 1 is not finite"),
    ([0, 1, 2, 3], [0, 1, 2], [1, 2, np.inf], r"value at position 2 is not finite"),
    (np.zeros(0, I64), np.zeros(0, I64), [], r"indptr is empty"),
    ([0, 1, 2, 3], [0.0, 1.0, 2.0], [1, 2, 3], r"indices must be a 1-D integer array, got float64 \(3,\)"),
    ([[0, 1, 2, 3]], [0, 1, 2], [1, 2, 3], r"indptr must be a 1-D integer array, got int64 \(1, 4\)"),
    ([0, 1, 2, 3], [0, 1, 2], np.array([1, 2, 3]), r"data must be a 1-D float array, got int64 \(3,\)"),
    ([0, 1, 2, 3], [0, 1, 2], np.ones((3, 1)), r"data must be a 1-D float array, got float64 \(3, 1\)"),
])
def test_csr_invariants(indptr, indices, data, match):
    data = data if isinstance(data, np.ndarray) else np.array(data, np.float32)
    with pytest.raises(WeightError, match=match) as info:
        Model([Linear(SparseWeight((3, 4), np.asarray(indptr), np.asarray(indices), data, CONTEXT), name="fc")])
    assert str(info.value).startswith(CONTEXT + ": ")


def test_valid_csr_with_unsorted_and_duplicate_indices_is_accepted():
    weight = SparseWeight((3, 4), np.array([0, 3, 3, 5]), np.array([3, 0, 3, 1, 1]), np.arange(1, 6, dtype=np.float32))
    assert np.array_equal(weight.to_dense(), [[2, 0, 0, 4], [0, 0, 0, 0], [0, 9, 0, 0]])
    assert np.array_equal(weight.indices, [0, 3, 3, 1, 1])  # rows sorted, stably
    assert np.array_equal(weight.data, [2, 1, 3, 4, 5])
    x = np.array([[1.0, 10.0, 100.0, 1000.0]], np.float32)
    for backend in ("sparse", "dense"):
        assert np.array_equal(Model([Linear(weight)], backend=backend)(x), [[4002.0, 0.0, 90.0]])


def test_csr_invariants_are_checked_by_the_engine_too():
    """The C++ constructors validate on their own (the Python checks are not the only guard)."""
    with pytest.raises(WeightError, match=r"linear layer 'x' key 'x.weight': column index 5 at position 1"):
        _core.Linear("x", "x.weight", 2, 3, np.array([0, 1, 2]), np.array([0, 5]), np.ones(2, np.float32), None,
                     "sparse")
    with pytest.raises(WeightError, match=r"conv2d layer 'c' key 'c.weight': indptr decreases at row 1 \(2 -> 1\)"):
        _core.Conv2d("c", "c.weight", 2, 1, 2, 2, 1, 1, 0, 0, np.array([0, 2, 1]), np.array([0]),
                     np.ones(1, np.float32), None, "dense")
    with pytest.raises(WeightError, match=r"layer 'x' key 'x.bias': bias has 3 entries but the weight \(2, 2\) has 2"):
        _core.Linear("x", "x.weight", 2, 2, np.array([0, 1, 2]), np.array([0, 1]), np.ones(2, np.float32),
                     np.ones(3, np.float32), "sparse")
    with pytest.raises(WeightError, match=r"layer 'x' key 'x.bias': entry 1 is not finite"):
        _core.Linear("x", "x.weight", 2, 2, np.array([0, 1, 2]), np.array([0, 1]), np.ones(2, np.float32),
                     np.array([0, np.nan], np.float32), "sparse")
    with pytest.raises(WeightError, match=r"matrix shape \(-1, 2\) is out of range"):
        _core.validate_csr("v", -1, 2, np.array([0]), np.zeros(0, np.int64), np.zeros(0, np.float32))
    with pytest.raises(WeightError, match="v: indptr is empty"):
        _core.validate_csr("v", 0, 2, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def test_index_beyond_int64():
    with pytest.raises(WeightError, match="indices holds a value beyond int64"):
        SparseWeight((1, 4), np.array([0, 1]), np.array([2**63], np.uint64), np.ones(1, np.float32), CONTEXT)


def test_scipy_weight_of_wrong_shape():
    import scipy.sparse

    matrix = scipy.sparse.random(4, 27, density=0.3, format="csr", dtype=np.float32, random_state=1)
    with pytest.raises(WeightError, match=r"scipy matrix of shape \(4, 27\) does not match weight shape \(4, 2, 3, 3\)"):
        Conv2d(matrix, kernel_size=3, in_channels=2, name="c")
    with pytest.raises(WeightError, match=r"conv2d layer 'c': weight \(4, 27\) does not fit kernel 2x2"):
        Conv2d(matrix, kernel_size=2, name="c")


# ---------------------------------------------------- layers that do not chain
def test_conv_channel_mismatch():
    with pytest.raises(ShapeError, match=r"conv2d layer 'c2' expects 5 input channels \(weight \(2, 5, 3, 3\)\) "
                                         r"but gets 4 \(after conv2d layer 'c1'\)"):
        Model([Conv2d(np.ones((4, 3, 3, 3), np.float32), name="c1"), ReLU(),
               Conv2d(np.ones((2, 5, 3, 3), np.float32), name="c2")])


def test_linear_after_feature_map_needs_flatten():
    with pytest.raises(ShapeError, match=r"linear layer 'l' needs a feature vector but gets a feature map "
                                         r"\(after conv2d layer 'c'\); add a Flatten"):
        Model([Conv2d(np.ones((4, 3, 3, 3), np.float32), name="c"), Linear(np.ones((2, 5), np.float32), name="l")])
    with pytest.raises(ShapeError, match=r"linear layer 'l': expects 5 input features .* per-sample shape "
                                         r"\(2, 4, 4\); add a Flatten before it"):
        Model([Linear(np.ones((2, 5), np.float32), name="l")])(np.zeros((1, 2, 4, 4), np.float32))


def test_linear_feature_mismatch():
    with pytest.raises(ShapeError, match=r"linear layer 'b' expects 5 input features \(weight \(2, 5\)\) but gets 4 "
                                         r"\(after linear layer 'a'\)"):
        Model([Linear(np.ones((4, 3), np.float32), name="a"), ReLU(), Linear(np.ones((2, 5), np.float32), name="b")])


def test_mismatch_found_only_with_an_input_shape():
    layers = [Conv2d(np.ones((2, 1, 3, 3), np.float32), name="c"), Flatten(name="f"),
              Linear(np.ones((3, 10), np.float32), name="l")]
    with pytest.raises(ShapeError, match=r"linear layer 'l': expects 10 input features \(weight shape \(3, 10\)\) "
                                         r"but its input has per-sample shape \(18,\)"):
        Model(layers, input_shape=(1, 5, 5))
    model = Model(layers)
    with pytest.raises(ShapeError, match=r"input of shape \(1, 1, 5, 5\): linear layer 'l'"):
        model(np.zeros((1, 1, 5, 5), np.float32))
    with pytest.raises(ShapeError, match="no input shape given and the model has none"):
        model.output_shape()


@pytest.mark.parametrize("layers,match", [
    (lambda: [Flatten(name="f"), Linear(np.ones((4, 8), np.float32), name="l"),
              Conv2d(np.ones((2, 4, 1, 1), np.float32), name="c")],
     r"conv2d layer 'c' needs a \(C, H, W\) feature map but gets a feature vector \(after linear layer 'l'\)"),
    (lambda: [Linear(np.ones((4, 8), np.float32), name="l"), MaxPool2d(2, name="p")],
     r"maxpool2d layer 'p' needs a \(C, H, W\) feature map but gets a feature vector"),
])
def test_feature_map_layers_after_vectors(layers, match):
    with pytest.raises(ShapeError, match=match):
        Model(layers())


def test_shape_errors_at_forward_time():
    with pytest.raises(ShapeError, match=r"softmax layer 's': expects a feature vector \(F,\) per sample, got "
                                         r"\(2, 2, 2\); add a Flatten before it"):
        Model([Softmax(name="s")])(np.zeros((1, 2, 2, 2), np.float32))
    with pytest.raises(ShapeError, match=r"maxpool2d layer 'p': window \(5, 5\) does not fit input \(1, 3, 3\)"):
        Model([MaxPool2d(5, name="p")])(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(ShapeError, match=r"maxpool2d layer 'p': expects a feature map \(C, H, W\) but its input has "
                                         r"per-sample shape \(8,\)"):
        Model([Flatten(), MaxPool2d(2, name="p")])(np.zeros((1, 2, 2, 2), np.float32))


# --------------------------------------------------------- bad layers
@pytest.mark.parametrize("make,error,match", [
    (lambda: Linear(np.ones((4, 3), np.float32), np.ones(3, np.float32), name="fc"), WeightError,
     r"linear layer 'fc' key 'fc.bias': bias float32 \(3,\) must be float of shape \(4,\) for weight \(4, 3\)"),
    (lambda: Linear(np.ones((4, 3), np.float32), np.ones((4, 1), np.float32), name="fc"), WeightError,
     r"key 'fc.bias': bias float32 \(4, 1\) must be float of shape \(4,\)"),
    (lambda: Linear(np.ones((4, 3), np.float32), np.ones(4, np.int32), name="fc"), WeightError,
     r"key 'fc.bias': bias int32 \(4,\) must be float"),
    (lambda: Conv2d(np.ones((4, 3, 1, 1), np.float32), np.ones(5, np.float32), name="c"), WeightError,
     r"conv2d layer 'c' key 'c.bias': bias float32 \(5,\) must be float of shape \(4,\) for weight \(4, 3, 1, 1\)"),
    (lambda: Linear(np.array([[1, np.nan, 0]], np.float32), name="fc"), WeightError,
     r"linear layer 'fc' key 'fc.weight': weight \(1, 3\) contains NaN or Inf"),
    (lambda: Conv2d(np.full((1, 1, 2, 2), np.inf, np.float32), name="c"), WeightError,
     r"conv2d layer 'c' key 'c.weight': weight \(1, 1, 2, 2\) contains NaN or Inf"),
    (lambda: Linear(np.ones((4, 3), np.float32), np.array([1, np.inf, 0, 0], np.float32), name="fc"), WeightError,
     r"linear layer 'fc' key 'fc.bias': bias contains NaN or Inf"),
    (lambda: Linear(np.ones((4, 3), np.float32), np.array([1, np.nan, 0, 0]), name="fc"), WeightError,
     r"key 'fc.bias': bias contains NaN or Inf"),
    (lambda: Linear(np.ones((4, 3), "U1"), name="fc"), WeightError, r"key 'fc.weight': weight dtype <U1 is not numeric"),
    (lambda: Linear(np.ones((4, 3, 2), np.float32), name="fc"), WeightError,
     r"key 'fc.weight': dense weight must be 2-D \(out, in\) or 4-D \(O, I, kh, kw\), got \(4, 3, 2\)"),
    (lambda: Linear(np.ones((4, 3, 2, 2), np.float32), name="fc"), WeightError,
     r"linear layer 'fc': weight must be 2-D \(out, in\), got \(4, 3, 2, 2\)"),
    (lambda: Conv2d(np.ones((4, 3), np.float32), name="c"), WeightError,
     r"conv2d layer 'c': weight must be 4-D \(O, I, kh, kw\), got \(4, 3\)"),
    (lambda: Conv2d(np.ones((4, 3, 3, 3), np.float32), stride=0, name="c"), FormatError,
     r"conv2d layer 'c': stride must be >= 1"),
    (lambda: Conv2d(np.ones((4, 3, 3, 3), np.float32), padding=-1, name="c"), FormatError,
     r"layer 'c': padding must be an int or a pair of ints in \[0, 2\^31\), got -1"),
    (lambda: Conv2d(np.ones((4, 3, 3, 3), np.float32), stride=(1, 2, 3), name="c"), FormatError,
     r"layer 'c': stride must be an int or a pair"),
    (lambda: Conv2d(np.ones((4, 3, 2, 2), np.float32), padding="same", name="c"), FormatError,
     r"conv2d layer 'c': padding='same' needs stride 1 and an odd kernel"),
    (lambda: Conv2d(np.ones((4, 3, 3, 3), np.float32), padding="full", name="c"), FormatError,
     r"conv2d layer 'c': padding must be an int, a pair, 'same' or 'valid'"),
    (lambda: Model([MaxPool2d(2, padding=2, name="p")]), FormatError,
     r"maxpool2d layer 'p': padding must be at most half the kernel size"),
    (lambda: Model([MaxPool2d(0, name="p")]), FormatError, r"maxpool2d layer 'p': kernel size and stride must be >= 1"),
    (lambda: MaxPool2d(2**31, name="p"), FormatError, r"layer 'p': kernel_size must be an int or a pair"),
    (lambda: MaxPool2d(True, name="p"), FormatError, r"layer 'p': kernel_size must be an int or a pair"),
])
def test_bad_layers(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_duplicate_layer_names():
    with pytest.raises(FormatError, match="two layers are named 'a'; names must be unique"):
        Model([Linear(np.ones((4, 3), np.float32), name="a"), ReLU(name="a")])


@pytest.mark.parametrize("layers,match", [
    ([], "a model needs at least one layer"),
    ([object()], "layer 0 is a object, not a sparsenet layer"),
    ([ReLU(), "relu"], "layer 1 is a str, not a sparsenet layer"),
])
def test_not_layers(layers, match):
    with pytest.raises(FormatError, match=match):
        Model(layers)


def test_bad_backend_name(tmp_path):
    layers = [Linear(np.ones((4, 3), np.float32))]
    with pytest.raises(FormatError, match=r"backend must be one of \('auto', 'sparse', 'dense'\), got 'gpu'"):
        Model(layers, backend="gpu")
    with pytest.raises(FormatError, match="got 'Sparse'"):
        sparsenet.models.lenet_300_100(backend="Sparse")
    Model(layers).save(tmp_path / "m.npz")
    with pytest.raises(FormatError, match="got 'cuda'"):
        Model.load(tmp_path / "m.npz", backend="cuda")
    with pytest.raises(FormatError, match="backend must be 'auto', 'sparse' or 'dense', got 'gpu'"):
        _core.Linear("x", "x.weight", 1, 1, np.array([0, 1]), np.array([0]), np.ones(1, np.float32), None, "gpu")


def test_bad_densities_and_architecture():
    with pytest.raises(FormatError, match="linear layer 'fc1': density 1.5 is outside"):
        sparsenet.models.lenet_300_100(densities=1.5)
    with pytest.raises(FormatError, match="unknown architecture 'resnet50'"):
        sparsenet.models.random_model("resnet50")


# ------------------------------------------------------------------ files
def test_round_trip_of_the_fixture_works(saved, rng):
    path, _ = saved
    model = Model.load(path)
    assert model(rng.random((2, 3, 6, 6), dtype=np.float32)).shape == (2, 10)


def test_object_array_in_a_file(tmp_path, saved):
    _, arrays = saved
    bad = dict(arrays)
    bad["fc.bias"] = np.array([{"x": 1}, None] * 5, dtype=object)
    path = tmp_path / "pickle.npz"
    np.savez(path, **bad)  # writes a pickle
    with pytest.raises(FormatError, match=r"linear layer 'fc' key 'fc.bias': dtype object is not allowed here "
                                          r"\(object arrays and pickles are refused"):
        Model.load(path)
    state = {"fc1.weight": np.array([None], dtype=object)}
    np.savez(tmp_path / "state.npz", **state)
    with pytest.raises(FormatError, match=r"linear layer 'fc1' key 'fc1.weight': dtype object is not allowed"):
        Model.load(tmp_path / "state.npz", arch="lenet_300_100")


def test_graph_as_object_array(tmp_path, saved):
    _, arrays = saved
    bad = dict(arrays)
    bad["__sparsenet__"] = np.array([graph_of(arrays)], dtype=object)
    np.savez(tmp_path / "g.npz", **bad)
    with pytest.raises(FormatError, match="key '__sparsenet__': dtype object is not allowed"):
        Model.load(tmp_path / "g.npz")


def test_structured_dtype_refused(tmp_path, saved):
    _, arrays = saved
    bad = dict(arrays)
    bad["fc.bias"] = np.zeros(10, dtype=[("a", np.float32)])
    with pytest.raises(FormatError, match=r"key 'fc.bias': dtype .* is not allowed"):
        load_arrays(tmp_path, bad)


def _edit_graph(arrays, edit):
    graph = graph_of(arrays)
    edit(graph)
    return with_graph(arrays, graph)


@pytest.mark.parametrize("edit,error,match", [
    (lambda g: g["layers"][1].update(kind="conv3d"), FormatError,
     r"layer 1 'relu': unknown layer kind 'conv3d' \(known: linear, conv2d"),
    (lambda g: g.update(version=3), FormatError, r"format version 3 is not supported \(this sparsenet reads versions 1 to 2\)"),
    (lambda g: g.update(version="1"), FormatError, r"format version '1' is not supported"),
    (lambda g: g.pop("version"), FormatError, r"format version None is not supported"),
    (lambda g: g.update(format="onnx"), FormatError, r"key '__sparsenet__' is not a sparsenet graph"),
    (lambda g: g.update(layers=[]), FormatError, r"the graph has no layer list"),
    (lambda g: g.update(layers={"a": 1}), FormatError, r"the graph has no layer list"),
    (lambda g: g["layers"].__setitem__(0, "conv"), FormatError, r"layer 0: not an object"),
    (lambda g: g["layers"][0].pop("name"), FormatError, r"layer 0: missing field 'name'"),
    (lambda g: g["layers"][0].update(name=7), FormatError, r"layer 0: field 'name' has the wrong type \(int\)"),
    (lambda g: g["layers"][1].update(name="conv"), FormatError, r"two layers are named 'conv'"),
    (lambda g: g["layers"][3].pop("weight"), FormatError, r"layer 3 'fc': missing field 'weight'"),
    (lambda g: g["layers"][3]["weight"].update(storage="coo"), FormatError,
     r"layer 3 'fc': unknown weight storage 'coo' \(expected 'csr' or 'dense'\)"),
    (lambda g: g["layers"][3]["weight"].update(shape=[10, 640, 1]), FormatError,
     r"layer 3 'fc': weight shape \[10, 640, 1\] must be 2 or 4 positive dimensions"),
    (lambda g: g["layers"][3]["weight"].update(shape=[10, -640]), FormatError, r"must be 2 or 4 positive dimensions"),
    (lambda g: g["layers"][3]["weight"].update(shape=[10, True]), FormatError, r"must be 2 or 4 positive dimensions"),
    (lambda g: g["layers"][3]["weight"].update(shape=[2**30, 2**30, 2, 2]), FormatError, r"is absurdly large"),
    (lambda g: g["layers"][3]["weight"].update(shape="10x640"), FormatError, r"field 'shape' has the wrong type"),
    (lambda g: g["layers"][3]["weight"].update(shape=[11, 640]), WeightError,
     r"linear layer 'fc' key 'fc.weight': indptr has 11 entries, expected rows \+ 1 = 12 for shape \(11, 640\)"),
    (lambda g: g["layers"][3]["weight"].update(shape=[10, 600]), WeightError,
     r"linear layer 'fc' key 'fc.weight': column index \d+ at position \d+ is out of range \[0, 600\)"),
    (lambda g: g["layers"][3].update(bias="yes"), FormatError, r"layer 3 'fc': field 'bias' has the wrong type"),
    (lambda g: g["layers"][0].update(stride=[1, 1, 1]), FormatError, r"layer 'conv': stride must be an int or a pair"),
    (lambda g: g["layers"][0].update(padding="sideways"), FormatError, r"conv2d layer 'conv': padding must be"),
    (lambda g: g["layers"][0]["weight"].update(shape=[40, 27]), FormatError,
     r"layer 0 'conv': conv2d weight shape \(40, 27\) must be \(O, I, kh, kw\)"),
    (lambda g: g["layers"][2].update(kind="maxpool2d"), FormatError, r"layer 2 'flat': missing field 'kernel_size'"),
    (lambda g: g["layers"][2].update(kind="avgpool2d", kernel_size=True), FormatError,
     r"layer 2 'flat': field 'kernel_size' has the wrong type \(bool\)"),
    (lambda g: g["layers"][0].update(same_padding="yes"), FormatError,
     r"layer 0 'conv': field 'same_padding' must be true or false"),
    (lambda g: g["layers"][2].update(kind="maxpool2d", kernel_size=2, ceil_mode=1), FormatError,
     r"layer 2 'flat': field 'ceil_mode' must be true or false"),
    (lambda g: g["layers"][2].update(kind="avgpool2d", kernel_size=2, count_include_pad="no"), FormatError,
     r"layer 2 'flat': field 'count_include_pad' must be true or false"),
    (lambda g: g["layers"][2].update(kind="dropout", p="half"), FormatError,
     r"layer 2 'flat': dropout p must be a number in \[0, 1\)"),
    (lambda g: g["layers"][2].update(kind="dropout", p=-3), FormatError, r"dropout layer 'flat': p must be in \[0, 1\)"),
    (lambda g: g.update(input_shape=[3, 0, 6]), FormatError, r"input_shape \[3, 0, 6\] is not a list of positive ints"),
    (lambda g: g.update(input_shape="3x6x6"), FormatError, r"input_shape '3x6x6' is not a list of positive ints"),
    (lambda g: g.update(input_shape=[4, 6, 6]), ShapeError, r"conv2d layer 'conv': expects a feature map of 3 channels"),
])
def test_bad_graph(tmp_path, saved, edit, error, match):
    _, arrays = saved
    with pytest.raises(error, match=match):
        load_arrays(tmp_path, _edit_graph(arrays, edit))


@pytest.mark.parametrize("graph,match", [
    (np.array(b"{not json"), r"key '__sparsenet__' is not valid JSON"),
    (np.array(b"[1, 2]"), r"key '__sparsenet__' is not a sparsenet graph"),
    (np.array([b"{}", b"{}"]), r"key '__sparsenet__' must be one string"),
    (np.array(b" " * (1 << 20) + b"{}"), r"key '__sparsenet__': \d+ bytes, more than the 1048576 this key may hold"),
    (np.float32(1.0), r"key '__sparsenet__': dtype float32 is not allowed here"),
    (np.array([1, 2], np.int64), r"key '__sparsenet__': dtype int64 is not allowed here"),
    (np.array('{"format": "sparsenet"}'), r"key '__sparsenet__': dtype <U23 is not allowed"),
    (np.array(b"[" * 100_000 + b"]" * 100_000), r"key '__sparsenet__': JSON nested too deeply"),
])
def test_bad_graph_member(tmp_path, saved, graph, match):
    _, arrays = saved
    bad = dict(arrays)
    bad["__sparsenet__"] = graph
    with pytest.raises(FormatError, match=match):
        load_arrays(tmp_path, bad)


@pytest.mark.parametrize("key,value,error,match", [
    ("fc.bias", np.ones(9, np.float32), FormatError,
     r"linear layer 'fc' key 'fc.bias': shape \(9,\), expected \(10,\) for weight \(10, 640\)"),
    ("fc.bias", np.ones(10, np.int64), FormatError,
     r"linear layer 'fc' key 'fc.bias': dtype int64 is not allowed here"),
    ("fc.bias", np.array([0, 1, np.inf, 0, 0, 0, 0, 0, 0, 0], np.float32), WeightError,
     r"linear layer 'fc' key 'fc.bias': bias contains NaN or Inf"),
    ("fc.weight.data", None, FormatError, r"linear layer 'fc' key 'fc.weight.data': missing from the file \(keys: "),
    ("fc.weight.indices", np.zeros(3, np.float32), FormatError,
     r"key 'fc.weight.indices': dtype float32 is not allowed here"),
    ("fc.weight.indptr", np.zeros((11, 1), np.uint16), FormatError,
     r"linear layer 'fc' key 'fc.weight.indptr': expected 1-D, got shape \(11, 1\)"),
    ("fc.weight.indptr", np.arange(11, dtype=np.uint16), WeightError,
     r"linear layer 'fc' key 'fc.weight': indptr\[-1\] is 10 but there are \d+ nonzeros"),
    ("conv.weight.indptr", np.zeros(41, np.uint8) + 1, WeightError,
     r"conv2d layer 'conv' key 'conv.weight': indptr\[0\] is 1, expected 0"),
])
def test_bad_weight_members(tmp_path, saved, key, value, error, match):
    _, arrays = saved
    bad = dict(arrays)
    if value is None:
        del bad[key]
    else:
        bad[key] = value
    with pytest.raises(error, match=match):
        load_arrays(tmp_path, bad)


def test_broken_csr_in_a_file_names_layer_and_key(tmp_path, saved):
    """The CSR invariants of issue 2's list, broken in a stored file rather than in memory."""
    _, arrays = saved
    indptr = arrays["fc.weight.indptr"].astype(np.int64)
    decreasing = indptr.copy()
    decreasing[3], decreasing[4] = indptr[4] + 1, indptr[3]
    cases = [
        ({"fc.weight.indptr": decreasing.astype(arrays["fc.weight.indptr"].dtype)},
         r"linear layer 'fc' key 'fc.weight': indptr decreases at row 3"),
        ({"fc.weight.indices": arrays["fc.weight.indices"][:-1]},
         r"linear layer 'fc' key 'fc.weight': indices has \d+ entries but data has \d+"),
        ({"conv.weight.indices": np.full_like(arrays["conv.weight.indices"], 27)},
         r"conv2d layer 'conv' key 'conv.weight': column index 27 at position 0 is out of range \[0, 27\)"),
    ]
    for change, match in cases:
        with pytest.raises(WeightError, match=match):
            load_arrays(tmp_path, {**arrays, **change})


def test_stored_layers_that_do_not_chain(tmp_path, saved):
    _, arrays = saved
    graph = graph_of(arrays)
    graph["layers"].insert(3, {"name": "fc0", "kind": "linear", "bias": False,
                               "weight": {"shape": [7, 640], "storage": "dense", "nnz": 7 * 640}})
    bad = {**with_graph(arrays, graph), "fc0.weight": np.ones((7, 640), np.float32)}
    with pytest.raises(ShapeError, match=r"linear layer 'fc' expects 640 input features \(weight \(10, 640\)\) but "
                                         r"gets 7 \(after linear layer 'fc0'\)"):
        load_arrays(tmp_path, bad)


def test_nan_in_stored_weights(tmp_path, saved):
    _, arrays = saved
    for key in ("fc.weight.data", "conv.weight.data"):
        bad = dict(arrays)
        bad[key] = bad[key].copy()
        bad[key][3] = np.nan
        layer = key.split(".")[0]
        with pytest.raises(WeightError, match=rf"layer '{layer}' key '{layer}.weight': value at position 3 is not finite"):
            load_arrays(tmp_path, bad)


def test_dense_stored_weight_of_wrong_shape(tmp_path):
    model = Model([Linear(np.ones((3, 4), np.float32), name="fc")])
    model.save(tmp_path / "m.npz")
    arrays = read_npz(tmp_path / "m.npz")
    assert "fc.weight" in arrays
    arrays["fc.weight"] = np.ones((4, 3), np.float32)
    with pytest.raises(FormatError, match=r"linear layer 'fc' key 'fc.weight': array shape \(4, 3\) differs from the "
                                          r"declared \(3, 4\)"):
        load_arrays(tmp_path, arrays)
    arrays["fc.weight"] = np.array([[1, 2, np.nan, 4]] * 3, np.float32)
    with pytest.raises(WeightError, match=r"key 'fc.weight': weight \(3, 4\) contains NaN or Inf"):
        load_arrays(tmp_path, arrays)


# ------------------------------------------------- damaged and hostile files
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        Model.load(tmp_path / "absent.npz")


@pytest.mark.parametrize("content", [b"", b"hello, this is not a zip file\n" * 10, b"PK\x03\x04" + b"\0" * 60,
                                     b"PK\x05\x06" + b"\0" * 18])
def test_not_a_zip(tmp_path, content):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(FormatError, match="not a readable .npz \\(zip\\) file|no '__sparsenet__' graph"):
        Model.load(path)


def test_zip_without_npy_members(tmp_path):
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(FormatError, match="no '__sparsenet__' graph"):
        Model.load(tmp_path / "z.npz")


def _set_flag_bits(path, member, bits):
    """OR ``bits`` into the general-purpose flags of ``member``'s local and central headers."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for signature, flags_at, name_length_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        position = 0
        while (position := data.find(signature, position)) >= 0:
            name_length = struct.unpack_from("<H", data, position + name_length_at)[0]
            if data[position + name_at:position + name_at + name_length] == name:
                flags = struct.unpack_from("<H", data, position + flags_at)[0]
                struct.pack_into("<H", data, position + flags_at, flags | bits)
            position += 4
    path.write_bytes(bytes(data))


def test_encrypted_member(tmp_path, saved):
    """zipfile raises RuntimeError (asking for a password) on encrypted members: found by fuzzing."""
    path, _ = saved
    _set_flag_bits(path, "fc.bias.npy", 0x1)
    with pytest.raises(FormatError, match=r"linear layer 'fc' key 'fc.bias': the zip member is encrypted"):
        Model.load(path)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, compress, fraction):
    model = sparsenet.models.lenet5(seed=1)
    path = tmp_path / "m.npz"
    model.save(path, compress=compress)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(FormatError, match="not a readable .npz"):
        Model.load(path)


def _member_span(path, key):
    offset = zip_member_data_offset(path, key + ".npy")
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(key + ".npy")
    return offset, info.compress_size


@pytest.mark.parametrize("key", ["fc.weight.data", "conv.weight.indices", "fc.bias", "__sparsenet__"])
def test_corrupted_member_fails_crc(tmp_path, saved, key):
    path, _ = saved
    offset, size = _member_span(path, key)
    data = bytearray(path.read_bytes())
    where = offset + size - 3  # in the data, past the .npy header
    data[where] ^= 0x5A
    data[where - 1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=rf"key '{key}': corrupt or truncated: Bad CRC-32"):
        Model.load(path)


def test_corrupted_compressed_member(tmp_path, saved):
    _, arrays = saved
    path = tmp_path / "c.npz"
    write_npz(path, arrays, compress=True)
    offset, size = _member_span(path, "fc.weight.data")
    data = bytearray(path.read_bytes())
    for i in range(offset + size // 3, offset + size // 3 + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=r"key 'fc.weight.data': corrupt or truncated"):
        Model.load(path)


def _npy_with_header(shape, dtype, data: bytes) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def _replace_member(path, key, payload: bytes, compress=zipfile.ZIP_STORED):
    """Rewrite the .npz at ``path`` with member ``key`` replaced by raw bytes."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members[key + ".npy"] = payload
    with zipfile.ZipFile(path, "w", compression=compress) as archive:
        for name, content in members.items():
            archive.writestr(name, content)


@pytest.mark.parametrize("shape", [(10**12,), (2**62,), (2**31, 2**31), (10**6, 10**6, 10**6)])
def test_absurd_header_shape_is_refused_without_allocating(tmp_path, saved, shape):
    path, _ = saved
    _replace_member(path, "fc.weight.data", _npy_with_header(shape, np.float32, b"\0" * 16))
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=r"key 'fc.weight.data': header declares shape .* but the member holds "
                                              r"16 data bytes"):
            Model.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20


def test_header_shape_disagreeing_with_data(tmp_path, saved):
    path, arrays = saved
    data = arrays["fc.weight.data"]
    _replace_member(path, "fc.weight.data", _npy_with_header((data.size + 1,), np.float32, data.tobytes()))
    with pytest.raises(FormatError, match=rf"header declares shape \({data.size + 1},\) of float32"):
        Model.load(path)


def test_negative_header_shape(tmp_path, saved):
    path, _ = saved
    payload = _npy_with_header((4,), np.float32, b"\0" * 16).replace(b"(4,)", b"(-4,)", 1)
    _replace_member(path, "fc.bias", payload)
    with pytest.raises(FormatError, match=r"key 'fc.bias': (negative dimension|corrupt)"):
        Model.load(path)


def test_garbage_npy_header(tmp_path, saved):
    path, _ = saved
    _replace_member(path, "fc.bias", b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4,}\n" + b"\0" * 40)
    with pytest.raises(FormatError, match=r"key 'fc.bias': corrupt or truncated"):
        Model.load(path)
    _replace_member(path, "fc.bias", b"not an npy member at all")
    with pytest.raises(FormatError, match=r"key 'fc.bias': corrupt or truncated"):
        Model.load(path)
    _replace_member(path, "fc.bias", b"\x93NUMPY\x09\x00")
    with pytest.raises(FormatError, match=r"key 'fc.bias'"):
        Model.load(path)
    # Unbalanced brackets: NumPy's header parser raises tokenize.TokenError (found by fuzzing).
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (4,\n"
    _replace_member(path, "fc.bias", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 16)
    with pytest.raises(FormatError, match=r"key 'fc.bias': corrupt or truncated"):
        Model.load(path)


def _patch_central_sizes(path, member, file_size=None, compress_size=None):
    """Overwrite the sizes the central directory declares for ``member``."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    position = 0
    while True:
        position = data.find(b"PK\x01\x02", position)
        assert position >= 0, member
        name_length = struct.unpack_from("<H", data, position + 28)[0]
        if data[position + 46:position + 46 + name_length] == name:
            break
        position += 4
    if compress_size is not None:
        struct.pack_into("<I", data, position + 20, compress_size)
    if file_size is not None:
        struct.pack_into("<I", data, position + 24, file_size)
    path.write_bytes(bytes(data))


def _member_bytes(path, key):
    with zipfile.ZipFile(path) as archive:
        return archive.read(key + ".npy")


def test_member_declaring_more_than_the_load_limit(tmp_path, saved):
    path, _ = saved
    # Rewritten by zipfile without zip64 extras, so the central directory holds the 32-bit sizes.
    _replace_member(path, "fc.weight.data", _member_bytes(path, "fc.weight.data"))
    _patch_central_sizes(path, "fc.weight.data.npy", file_size=0xFFFFFF00, compress_size=0xFFFFFF00)
    with pytest.raises(FormatError, match=r"key 'fc.weight.data': reading 4294967040 bytes would exceed the load "
                                          r"limit of 1048576 bytes"):
        Model.load(path, max_bytes=1 << 20)


def test_deflate_bomb_declaration(tmp_path, saved):
    path, _ = saved
    _replace_member(path, "fc.bias", _member_bytes(path, "fc.bias"), compress=zipfile.ZIP_DEFLATED)
    _patch_central_sizes(path, "fc.bias.npy", file_size=0x7FFFFFFF)
    with pytest.raises(FormatError, match=r"key 'fc.bias': declares 2147483647 bytes from \d+ compressed bytes, more "
                                          r"than deflate can produce"):
        Model.load(path)


def test_load_limit(tmp_path):
    model = sparsenet.models.lenet5(densities=0.3, seed=1)  # every layer above auto's always-sparse density
    model.save(tmp_path / "m.npz")
    with pytest.raises(FormatError, match=r"would exceed the load limit of 100000 bytes \(max_bytes\)"):
        Model.load(tmp_path / "m.npz", max_bytes=100_000)
    with pytest.raises(FormatError, match=r"the dense backend would need 1722000 bytes of dense weights, over max_bytes=1000000"):
        Model.load(tmp_path / "m.npz", backend="dense", max_bytes=1_000_000)
    # auto keeps dense copies of the layers above the always-sparse density, so they count too
    with pytest.raises(FormatError, match=r"the auto backend would need 1722000 bytes of dense weights"):
        Model.load(tmp_path / "m.npz", max_bytes=1_000_000)
    Model.load(tmp_path / "m.npz", backend="sparse", max_bytes=1_000_000)


def test_huge_declared_weight_refused_before_dense_allocation(tmp_path):
    """A tiny file declaring a 2^20 x 2^20 weight (4 TiB dense): the dense
    backend must refuse it by max_bytes, not try to allocate it."""
    rows = cols = 1 << 20
    graph = {"format": "sparsenet", "version": 1, "name": "huge", "input_shape": None,
             "layers": [{"name": "fc", "kind": "linear", "weight": {"shape": [rows, cols], "storage": "csr", "nnz": 1},
                         "bias": False}]}
    indptr = np.ones(rows + 1, np.uint8)
    indptr[0] = 0
    arrays = {"__sparsenet__": np.array(json.dumps(graph).encode()), "fc.weight.data": np.ones(1, np.float32),
              "fc.weight.indices": np.array([cols - 1], np.uint32), "fc.weight.indptr": indptr}
    write_npz(tmp_path / "huge.npz", arrays)
    sparse = Model.load(tmp_path / "huge.npz", backend="sparse")
    assert sparse.layers[0].nnz == 1
    with pytest.raises(FormatError, match=r"the dense backend would need 4398046511104 bytes of dense weights, over max_bytes"):
        Model.load(tmp_path / "huge.npz", backend="dense")


def test_file_errors_do_not_leak_open_files(tmp_path, saved):
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    for _ in range(20):
        with pytest.raises(FormatError):
            Model.load(path)
    after = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    assert after <= before + 1



@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 1, 3, 3), (2, 0, 3, 3)])
def test_zero_size_weight_is_refused(shape):
    layer = sparsenet.Conv2d if len(shape) == 4 else sparsenet.Linear
    with pytest.raises(WeightError, match=r"every size at least 1"):
        layer(np.zeros(shape, np.float32), name="z")
