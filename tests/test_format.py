"""The sparsenet .npz format (save -> load round trips, dtypes, sizes) and the
importers for PyTorch-style arrays, scipy CSR groups and TensorFlow triplets."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.sparse

import sparsenet
from sparsenet import Conv2d, Flatten, FormatError, Linear, Model
from sparsenet.format import file_sizes
from sparsenet.models import ARCHITECTURES, Architecture, LayerSpec

from conftest import (BACKENDS, SMALL_CONV_INPUT, arch_forward, assert_close, graph_of, input_batch, model_weights,
                      npz_bytes, random_tf_weights, read_npz, ref_linear, ref_relu, small_conv_model_layers,
                      sparse_dense_array, tf_arch_forward, write_npz)

ARCHS = ["lenet_300_100", "lenet5", "mnist_cnn"]


def weighted(model):
    return [layer for layer in model.layers if isinstance(layer, (Conv2d, Linear))]


def all_kinds_model(rng) -> Model:
    layers = small_conv_model_layers(rng)
    layers[0].bias = None  # a layer without bias
    return Model(layers, backend="auto", input_shape=SMALL_CONV_INPUT, name="all kinds")


# ------------------------------------------------------------ round trips
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("arch", ARCHS)
def test_builtin_round_trip(tmp_path, arch, compress):
    model = getattr(sparsenet.models, arch)(seed=11)
    path = tmp_path / f"{arch}.npz"
    model.save(path, compress=compress)
    loaded = Model.load(path)
    assert loaded.name == arch and loaded.input_shape == model.input_shape
    assert [(l.name, l.kind) for l in loaded.layers] == [(l.name, l.kind) for l in model.layers]
    for a, b in zip(weighted(model), weighted(loaded)):
        assert a.shape == b.shape and a.backend == b.backend
        assert np.array_equal(a.weight.indptr, b.weight.indptr)
        assert np.array_equal(a.weight.indices, b.weight.indices)
        assert np.array_equal(a.weight.data, b.weight.data)
        assert np.array_equal(a.bias, b.bias)
    x = input_batch(arch, 5)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-6)  # auto: each model times its layers
    for backend in ("sparse", "dense"):
        assert_close(Model.load(path, backend=backend)(x), arch_forward(arch, model_weights(model), x))


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_all_layer_kinds_round_trip(tmp_path, rng, compress, backend):
    model = all_kinds_model(np.random.default_rng(2))
    path = tmp_path / "all.npz"
    model.save(path, compress=compress)
    loaded = Model.load(path, backend=backend)
    assert loaded.name == "all kinds" and loaded.input_shape == SMALL_CONV_INPUT
    for a, b in zip(model.layers, loaded.layers):
        assert type(a) is type(b) and a.name == b.name and a.config() == b.config()
    assert loaded.layers[0].bias is None
    assert loaded.layers[8].p == pytest.approx(0.3)
    x = rng.standard_normal((4, *SMALL_CONV_INPUT)).astype(np.float32)
    expected = Model(model.layers, backend=backend)(x)
    if backend == "auto":  # two auto models time their layers separately and may choose differently
        np.testing.assert_allclose(loaded(x), expected, rtol=1e-5, atol=1e-6)
    else:
        assert np.array_equal(loaded(x), expected)


def test_round_trip_of_dense_stored_empty_and_biasless_layers(tmp_path, rng):
    full = rng.standard_normal((12, 3, 3, 3)).astype(np.float32)        # density 1: stored dense
    empty = np.zeros((5, 12 * 4 * 4), np.float32)                       # no nonzeros at all
    model = Model([Conv2d(full, None, stride=2, padding="valid", name="c"), Flatten(name="f"),
                   Linear(empty, np.arange(5, dtype=np.float32), name="l")], input_shape=(3, 9, 9))
    path = tmp_path / "m.npz"
    model.save(path)
    arrays = read_npz(path)
    assert set(arrays) == {"__sparsenet__", "c.weight", "l.weight.data", "l.weight.indices", "l.weight.indptr",
                           "l.bias"}
    assert arrays["c.weight"].dtype == np.float32 and np.array_equal(arrays["c.weight"], full)
    assert arrays["l.weight.data"].shape == (0,)
    graph = graph_of(arrays)
    assert graph["format"] == "sparsenet" and graph["version"] == 1
    assert graph["layers"][0] == {"name": "c", "kind": "conv2d", "stride": [2, 2], "padding": [0, 0],
                                  "weight": {"shape": [12, 3, 3, 3], "storage": "dense", "nnz": 324}, "bias": False}
    assert graph["layers"][2]["weight"] == {"shape": [5, 192], "storage": "csr", "nnz": 0}
    loaded = Model.load(path)
    x = rng.standard_normal((3, 3, 9, 9)).astype(np.float32)
    assert np.array_equal(loaded(x), model(x))
    assert np.array_equal(loaded(x), np.tile(np.arange(5, dtype=np.float32), (3, 1)))


def test_saved_file_is_plain_numpy(tmp_path):
    """numpy.load(allow_pickle=False) reads every member; CSR index arrays use
    the narrowest unsigned dtype and values are float32."""
    model = sparsenet.models.lenet5(seed=1)
    path = tmp_path / "lenet5.npz"
    model.save(path)
    arrays = read_npz(path)
    assert arrays["__sparsenet__"].dtype.kind == "S" and arrays["__sparsenet__"].shape == ()
    # conv1 (20 x 25, 330 nonzeros) is smaller stored dense, once the two extra members count.
    assert [layer.storage for layer in weighted(model)] == ["dense", "csr", "csr", "csr"]
    assert arrays["conv1.weight"].dtype == np.float32 and arrays["conv1.weight"].shape == (20, 1, 5, 5)
    expected_keys = {"__sparsenet__", "conv1.weight", "conv1.bias"}
    for layer in weighted(model)[1:]:
        expected_keys |= {f"{layer.name}.weight.{p}" for p in ("data", "indices", "indptr")} | {f"{layer.name}.bias"}
        assert arrays[f"{layer.name}.weight.data"].dtype == np.float32
        assert arrays[f"{layer.name}.bias"].dtype == np.float32
    assert set(arrays) == expected_keys
    # conv2: 500 columns, 3000 nonzeros; fc1: 800, 32000; fc2: 500, 950
    dtypes = {name: (arrays[f"{name}.weight.indices"].dtype, arrays[f"{name}.weight.indptr"].dtype)
              for name in ("conv2", "fc1", "fc2")}
    assert dtypes == {"conv2": (np.uint16, np.uint16), "fc1": (np.uint16, np.uint16), "fc2": (np.uint16, np.uint16)}


@pytest.mark.parametrize("cols,nnz_per_row,index_dtype,indptr_dtype", [
    (256, 5, np.uint8, np.uint8),        # largest index 255; nnz 255
    (257, 5, np.uint16, np.uint8),
    (300, 6, np.uint16, np.uint16),      # nnz 306 > 255
    (65536, 6, np.uint16, np.uint16),
    (65537, 6, np.uint32, np.uint16),
    (70000, 1300, np.uint32, np.uint32),  # nnz 66300 > 65535
])
def test_narrowest_index_dtypes(tmp_path, rng, cols, nnz_per_row, index_dtype, indptr_dtype):
    rows = 51
    indptr = np.arange(rows + 1, dtype=np.int64) * nnz_per_row
    indices = np.concatenate([np.sort(rng.choice(cols, nnz_per_row, replace=False)) for _ in range(rows)])
    indices[-1] = cols - 1
    data = rng.standard_normal(indices.size).astype(np.float32) + 10
    weight = sparsenet.SparseWeight((rows, cols), indptr, indices, data)
    model = Model([Linear(weight, name="fc")], backend="sparse")  # auto models may choose differently
    model.save(tmp_path / "m.npz")
    arrays = read_npz(tmp_path / "m.npz")
    assert arrays["fc.weight.indices"].dtype == index_dtype
    assert arrays["fc.weight.indptr"].dtype == indptr_dtype
    assert np.array_equal(arrays["fc.weight.indices"], indices)
    loaded = Model.load(tmp_path / "m.npz", backend="sparse")
    x = rng.standard_normal((2, cols)).astype(np.float32)
    assert np.array_equal(loaded(x), model(x))


def _graph_entry_bytes(path) -> int:
    """What the graph member alone adds to an .npz."""
    graph = read_npz(path)["__sparsenet__"]
    return len(npz_bytes({"__sparsenet__": graph})) - len(npz_bytes({}))


def _size_models(rng):
    models = [sparsenet.models.lenet5(seed=1), sparsenet.models.mnist_cnn(seed=1),
              sparsenet.models.lenet_300_100(seed=1), all_kinds_model(np.random.default_rng(3))]
    # Small layers near the CSR / dense break-even, where per-member overhead matters.
    for shape, density in [((10, 10), 0.7), ((4, 4), 0.5), ((3, 5), 0.3), ((40, 40), 0.75), ((8, 2, 3, 3), 0.6),
                           ((30, 30), 1.0), ((6, 6), 0.0), ((200, 100), 0.78)]:
        weight = sparse_dense_array(shape, density, rng)
        layer = Linear(weight, np.ones(shape[0], np.float32), name="a_layer") if len(shape) == 2 else \
            Conv2d(weight, None, name="a_convolution")
        models.append(Model([layer]))
    return models


@pytest.mark.parametrize("compress", [False, True])
def test_file_never_larger_than_dense_npz(tmp_path, rng, compress):
    """A sparsenet file takes no more room than np.savez of the dense fp32
    weights and biases, plus its graph entry."""
    for index, model in enumerate(_size_models(rng)):
        directory = tmp_path / str(index)
        directory.mkdir()
        sizes = file_sizes(model, directory)
        sparse_path = directory / "model.sparsenet.npz"
        assert sizes["sparsenet"] == os.path.getsize(sparse_path)
        if compress:
            model.save(sparse_path, compress=True)
            sizes["sparsenet"] = os.path.getsize(sparse_path)
        bound = sizes["dense"] + _graph_entry_bytes(sparse_path)
        assert sizes["sparsenet"] <= bound, (index, model.summary(), sizes)


def test_pruned_models_shrink(tmp_path):
    for builder, ratio in ((sparsenet.models.lenet5, 5), (sparsenet.models.lenet_300_100, 5),
                           (sparsenet.models.mnist_cnn, 4)):
        sizes = file_sizes(builder(), tmp_path)
        assert sizes["sparsenet"] * ratio < sizes["dense"], sizes


# ------------------------------------------------- importers: PyTorch-style
def torch_state(model: Model, names: dict[str, str] | None = None, matrix_view: bool = False) -> dict:
    state = {}
    for layer in weighted(model):
        key = (names or {}).get(layer.name, layer.name)
        weight = layer.weight.to_dense()
        state[f"{key}.weight"] = weight.reshape(weight.shape[0], -1) if matrix_view else weight
        state[f"{key}.bias"] = layer.bias
    return state


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_import_pytorch_dense_arrays(tmp_path, arch, backend):
    source = getattr(sparsenet.models, arch)(seed=21)
    write_npz(tmp_path / "state.npz", torch_state(source))
    model = Model.load(tmp_path / "state.npz", arch=arch, backend=backend)
    assert model.name == arch
    x = input_batch(arch, 3)
    assert_close(model(x), arch_forward(arch, model_weights(source), x))
    assert [layer.nnz for layer in weighted(model)] == [layer.nnz for layer in weighted(source)]


@pytest.mark.parametrize("arch", ["lenet5", "lenet_300_100"])
def test_import_pytorch_aliases_case_and_matrix_view(tmp_path, arch):
    """Caffe names (ip1, ip2), any letter case, convolutions as (O, I*kh*kw)."""
    source = getattr(sparsenet.models, arch)(seed=22)
    names = {"fc1": "IP1", "fc2": "ip2", "fc3": "Ip3", "conv1": "CONV1"}
    write_npz(tmp_path / "state.npz", torch_state(source, names, matrix_view=True))
    model = Model.load(tmp_path / "state.npz", arch=arch)
    x = input_batch(arch, 2)
    assert_close(model(x), arch_forward(arch, model_weights(source), x))


def test_import_warns_about_unused_keys(tmp_path):
    source = sparsenet.models.lenet_300_100(seed=1)
    state = torch_state(source)
    state["optimizer.momentum"] = np.zeros(3, np.float32)
    write_npz(tmp_path / "state.npz", state)
    with pytest.warns(UserWarning, match="keys not used by architecture 'lenet_300_100': optimizer.momentum"):
        Model.load(tmp_path / "state.npz", arch="lenet_300_100")


# --------------------------------------------------- importers: scipy CSR
def scipy_groups(model: Model, prefix_style: str, with_format: bool, fmt: str = "csr") -> dict:
    """What scipy.sparse.save_npz writes for each weight matrix, under prefixed keys."""
    arrays = {}
    for layer in weighted(model):
        w = layer.weight
        matrix = scipy.sparse.csr_matrix((w.data, w.indices, w.indptr), shape=(w.rows, w.cols))
        if fmt == "csc":
            matrix = matrix.tocsc()
        prefix = {"dot": f"{layer.name}.weight.", "slash": f"{layer.name}.weight/", "bare": f"{layer.name}/"}[prefix_style]
        arrays[prefix + "indices"] = matrix.indices               # int32, as scipy stores them
        arrays[prefix + "indptr"] = matrix.indptr
        arrays[prefix + "shape"] = np.array(matrix.shape)
        arrays[prefix + "data"] = matrix.data.astype(np.float64)  # any float dtype
        if with_format:  # and, as for a scipy sparse array (csr_array), _is_array
            arrays[prefix + "format"] = np.array(matrix.format.encode())
            arrays[prefix + "_is_array"] = np.array(True)
        arrays[f"{layer.name}.bias"] = layer.bias
    return arrays


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("prefix_style", ["dot", "slash", "bare"])
def test_import_scipy_csr_groups(tmp_path, arch, prefix_style):
    source = getattr(sparsenet.models, arch)(seed=31)
    write_npz(tmp_path / "csr.npz", scipy_groups(source, prefix_style, with_format=False))
    model = Model.load(tmp_path / "csr.npz", arch=arch, backend="sparse")
    x = input_batch(arch, 4)
    assert_close(model(x), arch_forward(arch, model_weights(source), x))


@pytest.mark.parametrize("compress", [False, True])
def test_import_scipy_groups_as_save_npz_writes_them(tmp_path, compress):
    """save_npz also writes 'format' (and '_is_array' for sparse arrays): a CSR group carrying them loads cleanly."""
    source = sparsenet.models.lenet5(seed=32)
    write_npz(tmp_path / "csr.npz", scipy_groups(source, "dot", with_format=True), compress=compress)
    model = Model.load(tmp_path / "csr.npz", arch="lenet5")
    x = input_batch("lenet5", 2)
    assert_close(model(x), arch_forward("lenet5", model_weights(source), x))


def test_import_refuses_csc_groups(tmp_path):
    """A CSC matrix saved by save_npz has the same member names; reading it as
    CSR would scramble the weights."""
    source = sparsenet.models.lenet_300_100(seed=33)
    write_npz(tmp_path / "csc.npz", scipy_groups(source, "dot", with_format=True, fmt="csc"))
    with pytest.raises(FormatError, match=r"fc1\.weight\.format.*'csc'"):
        Model.load(tmp_path / "csc.npz", arch="lenet_300_100")


def test_import_scipy_group_with_wrong_shape(tmp_path):
    source = sparsenet.models.lenet_300_100(seed=34)
    arrays = scipy_groups(source, "dot", with_format=False)
    arrays["fc2.weight.shape"] = np.array([300, 100])
    write_npz(tmp_path / "csr.npz", arrays)
    with pytest.raises(FormatError, match=r"linear layer 'fc2' key 'fc2\.weight\.shape': \(300, 100\), "
                                          r"expected \(100, 300\)"):
        Model.load(tmp_path / "csr.npz", arch="lenet_300_100")


# ------------------------------------------------ importers: TensorFlow
def tf_triplets(weights: dict, fc_layout: str = "in_out", dense: bool = False) -> dict:
    arrays = {}
    for name, (kernel, bias) in weights.items():
        if kernel.ndim == 2 and fc_layout == "out_in":
            kernel = np.ascontiguousarray(kernel.T)
        if dense:
            arrays[f"w_{name}"] = kernel
        else:
            idx = np.argwhere(kernel != 0).astype(np.int64)
            arrays[f"w_{name}"] = kernel[tuple(idx.T)]
            arrays[f"w_{name}_idx"] = idx
            arrays[f"w_{name}_shape"] = np.array(kernel.shape, np.int64)
        arrays[f"b_{name}"] = bias
    return arrays


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fc_layout", ["in_out", "out_in"])
@pytest.mark.parametrize("backend", ["sparse", "dense"])
def test_import_tensorflow_triplets(tmp_path, arch, fc_layout, backend):
    """TF layouts and TF semantics: NHWC convolution, (H, W, C) flattening; the
    importer must permute the first FC layer's inputs."""
    weights = random_tf_weights(arch, np.random.default_rng(41))
    write_npz(tmp_path / "tf.npz", tf_triplets(weights, fc_layout))
    model = Model.load(tmp_path / "tf.npz", arch=arch, backend=backend)
    x = input_batch(arch, 3)
    assert_close(model(x), tf_arch_forward(arch, weights, x))


@pytest.mark.parametrize("arch", ["lenet5", "mnist_cnn"])
def test_import_tensorflow_dense_kernels(tmp_path, arch):
    weights = random_tf_weights(arch, np.random.default_rng(42))
    write_npz(tmp_path / "tf.npz", tf_triplets(weights, dense=True))
    model = Model.load(tmp_path / "tf.npz", arch=arch)
    x = input_batch(arch, 2)
    assert_close(model(x), tf_arch_forward(arch, weights, x))


def test_import_tensorflow_channels_first_order(tmp_path):
    """flatten_order='chw': FC rows already in sparsenet's (C, H, W) order."""
    weights = random_tf_weights("mnist_cnn", np.random.default_rng(43))
    write_npz(tmp_path / "tf.npz", tf_triplets(weights))
    model = Model.load(tmp_path / "tf.npz", arch="mnist_cnn", flatten_order="chw")
    torch_weights = {name: (np.transpose(k, (3, 2, 0, 1)) if k.ndim == 4 else k.T, b) for name, (k, b) in weights.items()}
    x = input_batch("mnist_cnn", 2)
    assert_close(model(x), arch_forward("mnist_cnn", torch_weights, x))
    hwc = Model.load(tmp_path / "tf.npz", arch="mnist_cnn")
    assert not np.allclose(hwc(x), model(x), rtol=1e-3)


def test_import_tensorflow_conv_in_pytorch_layout(tmp_path):
    """Convolution triplets may use (out, in, kh, kw)."""
    weights = random_tf_weights("lenet5", np.random.default_rng(44))
    arrays = tf_triplets(weights)
    kernel = np.transpose(weights["conv2"][0], (3, 2, 0, 1))
    idx = np.argwhere(kernel != 0)
    arrays.update(w_conv2=kernel[tuple(idx.T)], w_conv2_idx=idx, w_conv2_shape=np.array(kernel.shape))
    write_npz(tmp_path / "tf.npz", arrays)
    x = input_batch("lenet5", 2)
    assert_close(Model.load(tmp_path / "tf.npz", arch="lenet5")(x), tf_arch_forward("lenet5", weights, x))


@pytest.fixture
def square_mlp(monkeypatch):
    """A tiny architecture with a square FC layer, where (in, out) and (out, in) both fit."""
    flat, relu = LayerSpec("flatten"), LayerSpec("relu")
    arch = Architecture("square_mlp", (12,), (flat, LayerSpec("linear", "fc1", (12, 12)), relu,
                                              LayerSpec("linear", "fc2", (5, 12))))
    monkeypatch.setitem(ARCHITECTURES, "square_mlp", arch)
    return "square_mlp"


def test_import_tensorflow_square_fc_needs_layout(tmp_path, rng, square_mlp):
    w1 = sparse_dense_array((12, 12), 0.6, rng)    # TF (in, out)
    w2 = sparse_dense_array((12, 5), 0.6, rng)
    b1, b2 = rng.standard_normal(12).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    write_npz(tmp_path / "tf.npz", tf_triplets({"fc1": (w1, b1), "fc2": (w2, b2)}))
    with pytest.raises(FormatError, match=r"key 'w_fc1': dense_shape \(12, 12\) is ambiguous: pass "
                                          r"tf_fc_layout='in_out' or 'out_in'"):
        Model.load(tmp_path / "tf.npz", arch=square_mlp)
    x = rng.standard_normal((3, 12)).astype(np.float32)
    model = Model.load(tmp_path / "tf.npz", arch=square_mlp, tf_fc_layout="in_out")
    assert_close(model(x), ref_relu(x @ w1.astype(np.float64) + b1) @ w2 + b2)
    # Read the other way, fc1 is transposed; fc2's (12, 5) then no longer fits.
    with pytest.raises(FormatError, match=r"key 'w_fc2': dense_shape \(12, 5\) does not fit tf_fc_layout='out_in'"):
        Model.load(tmp_path / "tf.npz", arch=square_mlp, tf_fc_layout="out_in")
    write_npz(tmp_path / "tf2.npz", tf_triplets({"fc1": (w1, b1), "fc2": (w2.T.copy(), b2)}))
    model = Model.load(tmp_path / "tf2.npz", arch=square_mlp, tf_fc_layout="out_in")
    assert_close(model(x), ref_linear(ref_relu(ref_linear(x, w1, b1)), w2.T, b2))


def test_import_options_are_checked(tmp_path, rng, square_mlp):
    weights = random_tf_weights("lenet_300_100", rng)
    write_npz(tmp_path / "tf.npz", tf_triplets(weights))
    with pytest.raises(FormatError, match="tf_fc_layout must be 'in_out' or 'out_in', got 'rows'"):
        Model.load(tmp_path / "tf.npz", arch="lenet_300_100", tf_fc_layout="rows")
    write_npz(tmp_path / "tf5.npz", tf_triplets(random_tf_weights("lenet5", rng)))
    with pytest.raises(FormatError, match="flatten_order must be 'hwc' or 'chw', got 'whc'"):
        Model.load(tmp_path / "tf5.npz", arch="lenet5", flatten_order="whc")
    with pytest.raises(FormatError, match=r"unknown import options \['fc_layout'\]"):
        Model.load(tmp_path / "tf.npz", arch="lenet_300_100", fc_layout="in_out")
    with pytest.raises(FormatError, match="unknown architecture 'lenet7'"):
        Model.load(tmp_path / "tf.npz", arch="lenet7")
    with pytest.raises(FormatError, match="no '__sparsenet__' graph.*pass arch="):
        Model.load(tmp_path / "tf.npz")
    sparsenet.models.lenet5().save(tmp_path / "native.npz")
    with pytest.raises(FormatError, match=r"options \['tf_fc_layout'\] apply only to imports"):
        Model.load(tmp_path / "native.npz", tf_fc_layout="in_out")


def test_import_missing_weight_or_bias(tmp_path):
    source = sparsenet.models.lenet5(seed=3)
    state = torch_state(source)
    del state["fc2.bias"]
    write_npz(tmp_path / "nobias.npz", state)
    with pytest.raises(FormatError, match=r"linear layer 'fc2': no bias found \(tried fc2\.bias, ip2\.bias, b_fc2"):
        Model.load(tmp_path / "nobias.npz", arch="lenet5")
    state = torch_state(source)
    del state["conv2.weight"]
    write_npz(tmp_path / "noweight.npz", state)
    with pytest.raises(FormatError, match=r"conv2d layer 'conv2': no weight found \(tried 'conv2\.weight'"):
        Model.load(tmp_path / "noweight.npz", arch="lenet5")


def test_import_transposed_pytorch_weight_is_explained(tmp_path):
    state = torch_state(sparsenet.models.lenet_300_100(seed=1))
    state["fc2.weight"] = np.ascontiguousarray(state["fc2.weight"].T)
    write_npz(tmp_path / "t.npz", state)
    with pytest.raises(FormatError, match=r"key 'fc2\.weight': shape \(300, 100\), expected \(100, 300\) "
                                          r"\(it looks transposed"):
        Model.load(tmp_path / "t.npz", arch="lenet_300_100")


def test_import_tensorflow_bad_triplets(tmp_path, rng):
    weights = random_tf_weights("lenet_300_100", rng)
    arrays = tf_triplets(weights)
    arrays["w_fc2_idx"] = arrays["w_fc2_idx"][:-1]
    write_npz(tmp_path / "a.npz", arrays)
    with pytest.raises(FormatError, match=r"key 'w_fc2': indices \(\d+, 2\) must be \[nnz, rank\]"):
        Model.load(tmp_path / "a.npz", arch="lenet_300_100")
    arrays = tf_triplets(weights)
    arrays["w_fc3_idx"] = arrays["w_fc3_idx"].copy()
    arrays["w_fc3_idx"][0] = [100, 0]
    write_npz(tmp_path / "b.npz", arrays)
    with pytest.raises(FormatError, match=r"key 'w_fc3': an index lies outside dense_shape \(100, 10\)"):
        Model.load(tmp_path / "b.npz", arch="lenet_300_100")
    arrays = tf_triplets(weights)
    del arrays["w_fc1_shape"]
    write_npz(tmp_path / "c.npz", arrays)
    with pytest.raises(FormatError, match="the triplet has no 'w_fc1_shape' key"):
        Model.load(tmp_path / "c.npz", arch="lenet_300_100")
    arrays = tf_triplets(weights)
    arrays["w_fc1_shape"] = np.array([784, 301])
    write_npz(tmp_path / "d.npz", arrays)
    with pytest.raises(FormatError, match=r"dense_shape \(784, 301\) is neither \(in, out\) = \(784, 300\)"):
        Model.load(tmp_path / "d.npz", arch="lenet_300_100")


def test_version_2_only_where_a_version_1_reader_would_run_it_wrongly(tmp_path, rng):
    """A model using same_padding, input_size or globalavgpool2d is written as
    version 2, which older sparsenets refuse instead of ignoring the fields
    (they would run other input sizes with the wrong padding or pool); any
    other model stays version 1. Both loaders read both versions."""
    def version(model):
        model.save(tmp_path / "m.npz")
        with np.load(tmp_path / "m.npz") as data:
            return json.loads(data["__sparsenet__"][()].decode())["version"]

    conv = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    assert version(sparsenet.models.lenet5(seed=1)) == 1
    for layers in ([Conv2d(conv, None, stride=2, padding=1, same_padding=True)],
                   [Conv2d(conv, None), sparsenet.AvgPool2d(2, input_size=(6, 6))],
                   [Conv2d(conv, None), sparsenet.GlobalAvgPool2d()]):
        model = Model(layers, input_shape=(2, 9, 9) if layers[0].same_padding else (2, 8, 8))
        assert version(model) == 2
        x = rng.standard_normal((2, *model.input_shape)).astype(np.float32)
        np.testing.assert_allclose(Model.load(tmp_path / "m.npz")(x), model(x), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sparsenet._core.load_model(str(tmp_path / "m.npz")).forward(x), model(x),
                                   rtol=1e-5, atol=1e-6)
