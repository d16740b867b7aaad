"""The C++ loader (sparsenet::load_model, for C++ applications) against the
Python front end: same outputs on every file Model.save writes, typed errors
and no crash on damaged files."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

import sparsenet
from sparsenet import _core


@pytest.fixture(scope="module")
def lenet5():
    return sparsenet.models.lenet5(seed=3)


@pytest.mark.parametrize("arch", ["lenet_300_100", "lenet5", "mnist_cnn"])
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("backend", ["sparse", "dense", "auto"])
def test_cpp_loader_matches_python(tmp_path, arch, compress, backend):
    model = sparsenet.models.random_model(arch, seed=1)
    path = tmp_path / "model.npz"
    model.save(path, compress=compress)
    loaded = _core.load_model(str(path), backend)
    assert loaded.name == arch
    assert tuple(loaded.input_shape) == model.input_shape
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    x = np.random.default_rng(0).standard_normal((5, *model.input_shape)).astype(np.float32)
    reference = sparsenet.Model.load(path, backend=backend)(x)
    np.testing.assert_allclose(loaded.forward(x), reference, rtol=1e-5, atol=1e-6)


def test_cpp_loader_reads_dense_stored_layers(tmp_path):
    weight = np.arange(1, 13, dtype=np.float32).reshape(3, 4)  # fully dense: stored dense
    model = sparsenet.Model([sparsenet.Linear(weight, np.ones(3, np.float32), name="fc")], input_shape=(4,))
    model.save(tmp_path / "dense.npz")
    with np.load(tmp_path / "dense.npz", allow_pickle=False) as npz:
        assert "fc.weight" in npz.files
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(_core.load_model(str(tmp_path / "dense.npz")).forward(x), model(x))


def _mutations(data: bytes, rng: np.random.Generator):
    for cut in sorted(set(rng.integers(0, len(data), 40).tolist()) | {0, 1, 21, 22, len(data) - 1}):
        yield f"truncated at {cut}", data[:cut]
    for position in rng.integers(0, len(data), 150).tolist():
        damaged = bytearray(data)
        damaged[position] ^= 1 << int(rng.integers(0, 8))
        yield f"bit flip at {position}", bytes(damaged)


@pytest.mark.parametrize("compress", [False, True])
def test_cpp_loader_survives_damaged_files(tmp_path, lenet5, compress):
    lenet5.save(tmp_path / "good.npz", compress=compress)
    data = (tmp_path / "good.npz").read_bytes()
    rng = np.random.default_rng(7 + compress)
    path = tmp_path / "bad.npz"
    x = np.zeros((1, 1, 28, 28), np.float32)
    outcomes = {"refused": 0, "loaded": 0}
    for label, damaged in _mutations(data, rng):
        path.write_bytes(damaged)
        try:
            model = _core.load_model(str(path))
        except sparsenet.ModelError as exc:
            assert str(path) in str(exc) or "layer" in str(exc), (label, str(exc))
            outcomes["refused"] += 1
        else:  # a flip in padding or a value the checks allow: it must still run
            model.forward(x)
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 0


def _npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_cpp_loader_refuses_object_arrays_and_absurd_headers(tmp_path):
    graph = np.array(b'{"format":"sparsenet","version":1,"layers":[{"name":"r","kind":"relu"}]}')
    path = tmp_path / "object.npz"
    path.write_bytes(_npz_bytes({"__sparsenet__": graph, "x": np.array([None, 1], dtype=object)}))
    _core.load_model(str(path))  # the object member is never read: no layer uses it

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    with zipfile.ZipFile(tmp_path / "absurd.npz", "w") as archive:
        archive.writestr("__sparsenet__.npy", _npz_member(graph.item().replace(
            b'"layers":[{"name":"r","kind":"relu"}]',
            b'"layers":[{"name":"fc","kind":"linear","weight":{"shape":[4,4],"storage":"dense"},"bias":false}]')))
        archive.writestr("fc.weight.npy", header.getvalue() + b"\0" * 16)
    with pytest.raises(sparsenet.FormatError, match=r"key 'fc.weight': header declares shape \(1000000000000,\)"):
        _core.load_model(str(tmp_path / "absurd.npz"))


def _npz_member(graph_bytes: bytes) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array(graph_bytes))
    return buffer.getvalue()


@pytest.mark.parametrize("text, match", [
    (b"{not json", "invalid JSON"),
    (b'{"format":"onnx"}', "is not a sparsenet graph"),
    (b'{"format":"sparsenet","version":3,"layers":[]}', "format version is not supported"),
    (b'{"format":"sparsenet","version":1,"layers":[{"name":"a","kind":"lstm"}]}', "unknown layer kind 'lstm'"),
    (b'{"format":"sparsenet","version":1,"layers":[{"name":"a","kind":"relu"},{"name":"a","kind":"relu"}]}',
     "two layers are named 'a'"),
    (b"[" * 100 + b"]" * 100, "nested too deeply"),
    (b'{"format":"sparsenet","version":1,"layers":[{"name":"p","kind":"maxpool2d","kernel_size":2,'
     b'"ceil_mode":"yes"}]}', "layer 0 'p': field 'ceil_mode' must be true or false"),
    (b'{"format":"sparsenet","version":1,"layers":[{"name":"p","kind":"avgpool2d","kernel_size":2,'
     b'"same_padding":1}]}', "layer 0 'p': field 'same_padding' must be true or false"),
])
def test_cpp_loader_refuses_bad_graphs(tmp_path, text, match):
    path = tmp_path / "graph.npz"
    path.write_bytes(_npz_bytes({"__sparsenet__": np.array(text)}))
    with pytest.raises(sparsenet.FormatError, match=match):
        _core.load_model(str(path))


def test_cpp_loader_refuses_non_zip_and_missing_files(tmp_path):
    (tmp_path / "text.npz").write_bytes(b"hello, this is not a zip file at all")
    with pytest.raises(sparsenet.FormatError, match="not a readable .npz"):
        _core.load_model(str(tmp_path / "text.npz"))
    with pytest.raises(sparsenet.FormatError, match="cannot open"):
        _core.load_model(str(tmp_path / "missing.npz"))
    with pytest.raises(sparsenet.FormatError, match="is a directory"):
        _core.load_model(str(tmp_path))


def test_dense_budget_agrees_with_auto_always_sparse(tmp_path):
    """Both loaders count auto's dense copies as the layers decide them: a
    layer pruned to exactly round(10 %) of its weights runs sparse and needs
    none, so a max_bytes below its dense size loads it; one nonzero more and
    auto keeps a dense copy, which the budget refuses."""
    rows, cols = 199, 301  # 10 % of them is 5,989.9 nonzeros: 5,990 count as 10 %
    limit = int(np.ceil(_core.AUTO_SPARSE_DENSITY["linear"] * rows * cols))
    budget = rows * cols * 4 - 1  # below the dense copy, far above the file
    for nnz, fits in ((limit, True), (limit + 1, False)):
        flat = np.zeros(rows * cols, np.float32)
        flat[np.linspace(0, rows * cols - 1, nnz).astype(int)] = 1.0
        path = tmp_path / f"fc{nnz}.npz"
        sparsenet.Model([sparsenet.Linear(flat.reshape(rows, cols), name="fc")]).save(path)
        if fits:
            assert _core.load_model(str(path), "auto", budget).forward(np.ones((1, cols), np.float32)).shape == (1, rows)
            sparsenet.Model.load(path, backend="auto", max_bytes=budget)
        else:
            with pytest.raises(sparsenet.FormatError, match="max_bytes"):
                _core.load_model(str(path), "auto", budget)
            with pytest.raises(sparsenet.FormatError, match="max_bytes"):
                sparsenet.Model.load(path, backend="auto", max_bytes=budget)


def _graph_edit(edit):
    def apply(arrays):
        graph = json.loads(arrays["__sparsenet__"][()].decode())
        edit(graph)
        arrays["__sparsenet__"] = np.array(json.dumps(graph).encode())
    return apply


def _fortran_conv_weight(arrays):
    """conv1 (66 % dense: stored dense) in Fortran order."""
    assert arrays["conv1.weight"].ndim == 4
    arrays["conv1.weight"] = np.asfortranarray(arrays["conv1.weight"])


@pytest.mark.parametrize("edit, match", [
    (lambda a: a.update({"fc1.weight.data": a["fc1.weight.data"].astype(">f4")}), "is not allowed"),
    (lambda a: a.update({"fc1.weight.data": a["fc1.weight.data"].astype(np.float16)}), "is not allowed"),
    (lambda a: a.update({"fc1.bias": a["fc1.bias"].astype(">f4")}), "is not allowed"),
    (_fortran_conv_weight, "Fortran|is not allowed"),
    (lambda a: a.update({"__sparsenet__": np.array(a["__sparsenet__"][()].decode())}), "is not allowed"),
    (_graph_edit(lambda g: g.update(version=1.0)), "format version"),
    (_graph_edit(lambda g: g.update(version=True)), "format version"),
    (_graph_edit(lambda g: g.update(input_shape=[1, True, 28])), "input_shape"),
    (lambda a: a.update({"__sparsenet__": np.array(a["__sparsenet__"][()].replace(b'"version":1,',
                                                                                 b'"version":1,"version":1,'))}),
     "duplicate key"),
    (lambda a: a.update({"__sparsenet__": np.array(a["__sparsenet__"][()] + b"\x00junk")}), "JSON"),
    (_graph_edit(lambda g: g["layers"][5]["weight"].update(nnz=7)), r"layer 5 'fc1': weight nnz 7 differs"),
    (_graph_edit(lambda g: g["layers"].insert(1, {"name": "drop", "kind": "dropout", "p": 7})), "dropout"),
])
def test_both_loaders_refuse_the_same_hand_made_files(tmp_path, lenet5, edit, match):
    """docs/cpp.md promises that the C++ loader checks files as Python does:
    dtypes other than little-endian float32/64 and integers, Fortran order,
    a unicode graph, a version or input_shape of the wrong JSON type, duplicate
    keys (Python kept the last, C++ the first) and text after a NUL in the
    graph are refused by both (each was accepted by one of them)."""
    lenet5.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as data:
        arrays = {key: data[key] for key in data.files}
    edit(arrays)
    path = tmp_path / "edited.npz"
    path.write_bytes(_npz_bytes(arrays))
    with pytest.raises(sparsenet.FormatError, match=match):
        sparsenet.Model.load(path)
    with pytest.raises(sparsenet.FormatError, match=match):
        _core.load_model(str(path))
