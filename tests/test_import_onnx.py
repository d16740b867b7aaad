"""Model.from_onnx: graphs exported by torch.onnx.export and built with the
onnx helper API (sparse_initializer, Gemm attributes, MatMul + Add), against
PyTorch's forward pass or NumPy."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from sparsenet import FormatError, Model  # noqa: E402
from sparsenet.cli import main as cli_main  # noqa: E402
from torch_nets import NETS, example, finalize, make_net, relative_error  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")


def export(net, x, path, dynamo=False):
    torch.onnx.export(net, (x,), str(path), dynamo=dynamo)
    return path


def expected(net, x):
    with torch.no_grad():
        return net(x).numpy()


@pytest.mark.parametrize("name", NETS)
def test_exported_from_torch(tmp_path, name):
    net = finalize(make_net(name))
    x = example(name)
    model = Model.from_onnx(export(net, x, tmp_path / f"{name}.onnx"))
    assert relative_error(model(x.numpy()), expected(net, x)) < 1e-4
    assert model.input_shape == tuple(x.shape[1:])


def test_exported_with_dynamo(tmp_path):
    net = finalize(make_net("small_vgg"))  # the dynamo exporter folds BatchNorm and emits ReduceMean/Reshape
    x = example("small_vgg")
    model = Model.from_onnx(export(net, x, tmp_path / "vgg.onnx", dynamo=True))
    assert relative_error(model(x.numpy()), expected(net, x)) < 1e-4


def to_sparse_initializers(model, coordinates: bool):
    """Move every weight initializer with zeros into sparse_initializer."""
    graph = model.graph
    keep = []
    for tensor in graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.ndim < 2 or not (array == 0).any():
            keep.append(tensor)
            continue
        flat = np.flatnonzero(array)
        indices = np.stack(np.unravel_index(flat, array.shape), axis=1) if coordinates else flat
        values = numpy_helper.from_array(array.reshape(-1)[flat], tensor.name)
        graph.sparse_initializer.append(
            helper.make_sparse_tensor(values, numpy_helper.from_array(indices.astype(np.int64), ""), array.shape))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return model


@pytest.mark.parametrize("name", ("lenet5", "small_vgg"))
@pytest.mark.parametrize("coordinates", (False, True), ids=("linear", "coordinates"))
def test_sparse_initializer(tmp_path, name, coordinates):
    net = finalize(make_net(name))
    x = example(name)
    path = export(net, x, tmp_path / "dense.onnx")
    sparse = to_sparse_initializers(onnx.load(str(path)), coordinates)
    assert len(sparse.graph.sparse_initializer) >= 4
    onnx.save(sparse, str(tmp_path / "sparse.onnx"))
    model = Model.from_onnx(tmp_path / "sparse.onnx")
    assert relative_error(model(x.numpy()), expected(net, x)) < 1e-4
    assert (tmp_path / "sparse.onnx").stat().st_size < path.stat().st_size


def _graph(nodes, initializers, in_shape, out_name, sparse=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
                              sparse_initializer=list(sparse))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_gemm_attributes_and_matmul_add(tmp_path):
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((6, 5)) * (rng.random((6, 5)) < 0.4)).astype(np.float32)  # (in, out): transB=0
    c1 = rng.standard_normal((1, 5)).astype(np.float32)
    w2 = (rng.standard_normal((5, 4)) * (rng.random((5, 4)) < 0.5)).astype(np.float32)
    b2 = rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w1", "c1"], ["g"], name="gemm", alpha=0.5, beta=2.0, transB=0),
             helper.make_node("Relu", ["g"], ["r"], name="relu"),
             helper.make_node("Identity", ["r"], ["i"], name="identity"),
             helper.make_node("MatMul", ["i", "w2"], ["m"], name="matmul"),
             helper.make_node("Add", ["m", "b2"], ["y"], name="add")]
    onnx.save(_graph(nodes, {"w1": w1, "c1": c1, "w2": w2, "b2": b2}, [6], "y"), str(tmp_path / "m.onnx"))
    model = Model.from_onnx(tmp_path / "m.onnx")
    x = rng.standard_normal((3, 6)).astype(np.float32)
    reference = np.maximum(0.5 * x @ w1 + 2.0 * c1, 0) @ w2 + b2
    assert relative_error(model(x), reference) < 1e-5


def test_unsupported_operator_is_named(tmp_path):
    w = np.ones((3, 4), np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["g"], name="fc", transB=1),
             helper.make_node("Tanh", ["g"], ["y"], name="squash")]
    onnx.save(_graph(nodes, {"w": w}, [4], "y"), str(tmp_path / "tanh.onnx"))
    with pytest.raises(FormatError, match=r"node 'squash' \(Tanh\): operator Tanh is not supported"):
        Model.from_onnx(tmp_path / "tanh.onnx")


def test_branching_graph_is_refused(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "x"], ["y"], name="skip")]
    onnx.save(_graph(nodes, {}, [4], "y"), str(tmp_path / "skip.onnx"))
    with pytest.raises(FormatError, match="node 'skip'.*sequential chains only"):
        Model.from_onnx(tmp_path / "skip.onnx")


def test_malformed_files(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07garbage that is not protobuf \xff\xff\xff")
    with pytest.raises(FormatError, match="garbage.onnx"):
        Model.from_onnx(garbage)
    with pytest.raises(FileNotFoundError):
        Model.from_onnx(tmp_path / "missing.onnx")
    values = numpy_helper.from_array(np.ones(2, np.float32), "w")
    bad = helper.make_sparse_tensor(values, numpy_helper.from_array(np.array([0, 12], np.int64), ""), [3, 4])
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)]
    onnx.save(_graph(nodes, {}, [4], "y", sparse=[bad]), str(tmp_path / "bad_index.onnx"))
    with pytest.raises(FormatError, match="sparse_initializer 'w': a linear index lies outside dims"):
        Model.from_onnx(tmp_path / "bad_index.onnx")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 0, 0, 0])]
    onnx.save(_graph(nodes, {"w": np.ones((2, 1, 3, 3), np.float32)}, [1, 5, 5], "y"), str(tmp_path / "pads.onnx"))
    with pytest.raises(FormatError, match=r"node 'conv' \(Conv\): pads \[1, 0, 0, 0\] are not symmetric"):
        Model.from_onnx(tmp_path / "pads.onnx")


def test_symbolic_input_needs_shape(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["y"], name="flat")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")])
    onnx.save(helper.make_model(graph), str(tmp_path / "sym.onnx"))
    with pytest.raises(FormatError, match="pass input_shape"):
        Model.from_onnx(tmp_path / "sym.onnx")
    model = Model.from_onnx(tmp_path / "sym.onnx", input_shape=(1, 6, 6))
    x = np.ones((2, 1, 6, 6), np.float32)
    np.testing.assert_allclose(model(x), np.full((2, 2), 9.0), rtol=1e-6)


def test_cli_convert(tmp_path, capsys):
    net = finalize(make_net("lenet5"))
    x = example("lenet5")
    source = export(net, x, tmp_path / "lenet5.onnx")
    assert cli_main(["convert", str(source), "-o", str(tmp_path / "out.npz")]) == 0
    assert "dense fp32" in capsys.readouterr().out
    assert relative_error(Model.load(tmp_path / "out.npz")(x.numpy()), expected(net, x)) < 1e-4
    assert cli_main(["inspect", str(source)]) == 0  # inspect reads what convert reads
    assert "conv2d" in capsys.readouterr().out
    assert cli_main(["convert", str(source), "-o", str(tmp_path / "x.npz"), "--arch", "lenet5"]) == 2
    assert "--arch applies to PyTorch state_dicts" in capsys.readouterr().err


def test_same_padding_refuses_sizes_it_would_pad_otherwise(tmp_path):
    """auto_pad SAME is resolved for the import size. A stride-2 'SAME' layer
    imported for 9x9 pads 1 row on each side; a 10x10 input needs 0 before and
    1 after, which would keep the output shape (5x5) but shift every window:
    refused with ShapeError by the Python and the C++ loaders' models alike,
    as 11x11 is by the pool after it (a 6x6 map). Sizes that every layer pads
    alike match onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    from sparsenet import ShapeError, _core
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", strides=[2, 2], auto_pad="SAME_UPPER"),
             helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                              auto_pad="SAME_UPPER")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "same.onnx"))
    model = Model.from_onnx(tmp_path / "same.onnx", input_shape=(3, 9, 9))
    model.save(tmp_path / "same.npz")
    session = ort.InferenceSession(str(tmp_path / "same.onnx"))
    for loaded in (model, Model.load(tmp_path / "same.npz")):
        for size in (9, 13, 17):
            x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
            assert relative_error(loaded(x), session.run(None, {"x": x})[0]) < 1e-5, size
        with pytest.raises(ShapeError, match=r"conv2d layer 'conv'.*'same' padding resolved at import to \(1, 1\) "
                                             r"on each side, but input \(3, 10, 10\) needs \(0, 0\) rows / columns "
                                             r"before and \(1, 1\) after"):
            loaded(np.zeros((1, 3, 10, 10), np.float32))
        with pytest.raises(ShapeError, match=r"maxpool2d layer 'pool'.*input \(4, 6, 6\) needs"):
            loaded(np.zeros((1, 3, 11, 11), np.float32))
    engine = _core.load_model(str(tmp_path / "same.npz"), "auto")
    with pytest.raises(ShapeError, match="'same' padding"):
        engine.output_shape([3, 10, 10])
    assert engine.output_shape([3, 13, 13]) == [4, 4, 4]


@pytest.mark.parametrize("batch_dim, target, ok", [
    ("N", [0, -1], True), ("N", [-1, 8], True), ("N", [0, 8], True), (2, [2, -1], True),
    ("N", [4, -1], False), (2, [4, -1], False), ("N", [2, -1], False), ("N", [-1, 4], False),
])
def test_reshape_is_a_flatten_only_when_it_keeps_the_batch(tmp_path, batch_dim, target, ok):
    """Reshape (N, 2, 2, 2) to (0 | its fixed batch, -1) or (-1, 8) is a
    flatten; to (4, -1) it folds samples together ((2, 2, 2, 2) becomes (4, 4)
    in onnxruntime) and is refused rather than run as a flatten."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 2, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.array(target, np.int64), "shape")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "r.onnx"))
    if ok:
        x = np.arange(16, dtype=np.float32).reshape(2, 2, 2, 2)
        np.testing.assert_array_equal(Model.from_onnx(tmp_path / "r.onnx")(x), x.reshape(2, 8))
    else:
        with pytest.raises(FormatError, match=r"node 'reshape' \(Reshape\): reshape of a \(2, 2, 2\) sample to "
                                              rf"\[{target[0]}, {target[1]}\] is not a flatten"):
            Model.from_onnx(tmp_path / "r.onnx")


@pytest.mark.parametrize("bias_shape", [(4,), (3, 4), (1, 4, 2, 1)])
def test_conv_bias_add_of_the_wrong_shape_says_which_shape_fits(tmp_path, bias_shape):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Add", ["c", "b"], ["y"], name="bias")]
    initializers = {"w": np.ones((4, 1, 3, 3), np.float32), "b": np.ones(bias_shape, np.float32)}
    onnx.save(_graph(nodes, initializers, [1, 4, 4], "y"), str(tmp_path / "b.onnx"))
    with pytest.raises(FormatError, match=r"node 'bias' \(Add\): adds a constant of shape .* expected shape "
                                          r"\(4, 1, 1\) or \(1, 4, 1, 1\)"):
        Model.from_onnx(tmp_path / "b.onnx")


@pytest.mark.parametrize("op", ["GlobalAveragePool", "ReduceMean"])
def test_global_average_runs_other_input_sizes(tmp_path, op):
    """GlobalAveragePool / ReduceMean over (2, 3) average the whole map whatever
    its size: imported for 8x8 from a graph with symbolic H and W, a 12x12
    input matches onnxruntime (it once averaged only the top-left 8x8)."""
    ort = pytest.importorskip("onnxruntime")
    if op == "GlobalAveragePool":
        nodes = [helper.make_node("GlobalAveragePool", ["x"], ["y"], name="gap")]
        initializers = []
    else:
        nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="gap", keepdims=1)]
        initializers = [numpy_helper.from_array(np.array([2, 3], np.int64), "axes")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "g.onnx"))
    model = Model.from_onnx(tmp_path / "g.onnx", input_shape=(2, 8, 8))
    session = ort.InferenceSession(str(tmp_path / "g.onnx"))
    for size in (8, 12, 3):
        x = np.arange(2 * 2 * size * size, dtype=np.float32).reshape(2, 2, size, size)
        np.testing.assert_allclose(model(x), session.run(None, {"x": x})[0], rtol=1e-6)


def test_stride_1_same_padding_is_not_size_bound(tmp_path):
    """Stride-1 'SAME' pads kernel - 1 at every input size: such a layer runs any
    size and its file stays format version 1 (readable by older sparsenets)."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", auto_pad="SAME_UPPER")]
    onnx.save(_graph(nodes, {"w": np.ones((2, 1, 3, 3), np.float32)}, [1, 6, 6], "y"), str(tmp_path / "s.onnx"))
    model = Model.from_onnx(tmp_path / "s.onnx")
    assert model["conv"].same_padding is False
    assert model.output_shape((1, 9, 7)) == (2, 9, 7)
    model.save(tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as data:
        assert b'"version":1' in data["__sparsenet__"][()]
