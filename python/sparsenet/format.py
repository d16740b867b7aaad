"""The sparsenet ``.npz`` format and the importers for other tools' exports.

See docs/format.md for the layout and the key conventions.
"""

from __future__ import annotations

import json
import os
import warnings
from math import prod
from typing import Any

import numpy as np

from . import _core
from ._npz import DEFAULT_MAX_BYTES, NpzArchive
from .errors import FormatError, ModelError
from .layers import (AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer, Linear, MaxPool2d, ReLU, Softmax,
                     SparseWeight, _Weighted)
from .model import BACKENDS, Model

# Version 2 added what a version-1 reader would ignore and so run wrongly:
# same_padding and input_size on convolutions and pools, and globalavgpool2d.
# A model using none of them is written as version 1, readable by older sparsenets.
FORMAT_VERSION = 2
_READ_VERSIONS = (1, 2)
_VERSION_2_FIELDS = ("same_padding", "input_size")
GRAPH_KEY = "__sparsenet__"
_MAX_GRAPH_BYTES = 1 << 20
_MAX_ELEMENTS = 1 << 40


# --------------------------------------------------------------------- saving
def save_model(model: Model, path: str | os.PathLike, compress: bool = False) -> None:
    layers = []
    arrays: dict[str, np.ndarray] = {}
    for layer in model.layers:
        entry: dict[str, Any] = {"name": layer.name, "kind": layer.kind, **layer.config()}
        if isinstance(layer, _Weighted):
            w = layer.weight
            storage = w.storage(layer.name)
            entry["weight"] = {"shape": list(w.shape), "storage": storage, "nnz": w.nnz}
            entry["bias"] = layer.bias is not None
            if storage == "csr":
                arrays[f"{layer.name}.weight.data"] = w.data
                arrays[f"{layer.name}.weight.indices"] = w.indices.astype(w.index_dtype())
                arrays[f"{layer.name}.weight.indptr"] = w.indptr.astype(w.indptr_dtype())
            else:
                arrays[f"{layer.name}.weight"] = w.to_dense()
            if layer.bias is not None:
                arrays[f"{layer.name}.bias"] = layer.bias
        layers.append(entry)
    needs_2 = any(entry["kind"] == "globalavgpool2d" or any(key in entry for key in _VERSION_2_FIELDS)
                  for entry in layers)
    graph = {"format": "sparsenet", "version": 2 if needs_2 else 1, "name": model.name,
             "input_shape": list(model.input_shape) if model.input_shape else None, "layers": layers}
    # UTF-8 bytes (dtype S): a unicode array would take 4 bytes a character.
    arrays[GRAPH_KEY] = np.array(json.dumps(graph, separators=(",", ":")).encode("utf-8"))
    with open(path, "wb") as handle:
        (np.savez_compressed if compress else np.savez)(handle, **arrays)


# -------------------------------------------------------------------- loading
def load_model(path: str | os.PathLike, backend: str = "auto", arch: str | None = None,
               max_bytes: int = DEFAULT_MAX_BYTES, **options: Any) -> Model:
    if backend not in BACKENDS:
        raise FormatError(f"backend must be one of {BACKENDS}, got {backend!r}")
    with NpzArchive(path, max_bytes=max_bytes) as archive:
        if GRAPH_KEY in archive:
            if options:
                raise FormatError(f"{archive.path}: options {sorted(options)} apply only to imports with arch=")
            model = _load_native(archive, backend)
            if arch is not None and model.name != arch:
                warnings.warn(f"{archive.path}: a sparsenet file describes its own graph ({model.name!r}); "
                              f"arch={arch!r} is not used", stacklevel=3)
        elif arch is not None:
            from .importers import import_arch

            model = import_arch(archive, arch, backend, **options)
        else:
            raise FormatError(f"{archive.path}: no '{GRAPH_KEY}' graph, so this is not a sparsenet model file; "
                              "to load weights exported by another tool pass arch= (--arch on the command line: "
                              "lenet_300_100, lenet5, mnist_cnn, vgg16, vgg19)")
    return model


def check_dense_budget(archive: NpzArchive, weights: list[SparseWeight], backend: str) -> None:
    """Refuse, before any layer is built, dense copies of the weights that would
    exceed the archive's max_bytes (a small file can declare a huge sparse
    weight): every layer for backend "dense", those above the always-sparse
    density (which keep both forms) for "auto"."""
    if backend == "sparse":
        return
    def always_sparse(w: SparseWeight) -> bool:  # the engine's own rule
        return _core._auto_always_sparse("linear" if len(w.shape) == 2 else "conv2d", w.rows, w.cols, w.nnz)

    dense = sum(w.dense_bytes() for w in weights if backend == "dense" or not always_sparse(w))
    if dense > archive.max_bytes:
        raise FormatError(f"{archive.path}: the {backend} backend would need {dense} bytes of dense weights, "
                          f"over max_bytes={archive.max_bytes}")


def _field(entry: dict, key: str, kind: type | tuple, where: str) -> Any:
    if key not in entry:
        raise FormatError(f"{where}: missing field '{key}'")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise FormatError(f"{where}: field '{key}' has the wrong type ({type(value).__name__})")
    return value


def _bool_field(entry: dict, key: str, default: bool, where: str) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        raise FormatError(f"{where}: field '{key}' must be true or false")
    return value


def _weight_shape(meta: dict, where: str) -> tuple[int, ...]:
    shape = _field(meta, "shape", list, where)
    if len(shape) not in (2, 4) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d < 2**31 for d in shape):
        raise FormatError(f"{where}: weight shape {shape} must be 2 or 4 positive dimensions below 2^31")
    if prod(shape) > _MAX_ELEMENTS:
        raise FormatError(f"{where}: weight shape {shape} is absurdly large")
    return tuple(shape)


def _read_weighted(archive: NpzArchive, entry: dict, name: str, where: str) -> tuple[SparseWeight, np.ndarray | None]:
    meta = _field(entry, "weight", dict, where)
    shape = _weight_shape(meta, where)
    storage = _field(meta, "storage", str, where)
    context = f"{entry['kind']} layer '{name}'"
    if storage == "csr":
        key = f"{name}.weight"
        data = archive.read(f"{key}.data", "f", context, strict=True)
        indices = archive.read(f"{key}.indices", "iu", context, strict=True)
        indptr = archive.read(f"{key}.indptr", "iu", context, strict=True)
        for part, array in (("data", data), ("indices", indices), ("indptr", indptr)):
            if array.ndim != 1:
                raise FormatError(f"{archive.path}: {context} key '{key}.{part}': expected 1-D, got shape {array.shape}")
        nnz = meta.get("nnz", data.shape[0])  # optional; when given, the data's length
        if type(nnz) is not int or nnz != data.shape[0]:
            shown = nnz if type(nnz) is int else "(not an int)"
            raise FormatError(f"{where}: weight nnz {shown} differs from the {data.shape[0]} values in '{key}.data'")
        weight = SparseWeight(shape, indptr, indices, data, f"{archive.path}: {context} key '{key}'")
    elif storage == "dense":
        dense = archive.read(f"{name}.weight", "f", context, strict=True)
        if dense.shape != shape:
            raise FormatError(f"{archive.path}: {context} key '{name}.weight': array shape {dense.shape} "
                              f"differs from the declared {shape}")
        weight = SparseWeight.from_dense(dense, f"{archive.path}: {context} key '{name}.weight'")
    else:
        raise FormatError(f"{where}: unknown weight storage {storage!r} (expected 'csr' or 'dense')")
    bias = None
    if _field(entry, "bias", bool, where):
        bias = archive.read(f"{name}.bias", "f", context, strict=True)
        if bias.shape != (shape[0],):
            raise FormatError(f"{archive.path}: {context} key '{name}.bias': shape {bias.shape}, expected ({shape[0]},) "
                              f"for weight {shape}")
    return weight, bias


def _unique_keys(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f'duplicate key "{duplicate}"')  # reported as invalid JSON, as by the C++ loader
    return dict(pairs)


def _load_native(archive: NpzArchive, backend: str) -> Model:
    raw = archive.read(GRAPH_KEY, "S", limit=_MAX_GRAPH_BYTES, strict=True)
    if raw.shape != ():
        raise FormatError(f"{archive.path}: key '{GRAPH_KEY}' must be one string, got shape {raw.shape}")
    try:
        text = raw[()]
        graph = json.loads(text.decode("utf-8") if isinstance(text, bytes) else str(text),
                           object_pairs_hook=_unique_keys)
    except ValueError as exc:
        raise FormatError(f"{archive.path}: key '{GRAPH_KEY}' is not valid JSON: {exc}") from None
    except RecursionError:  # as the C++ loader, which stops at depth 64
        raise FormatError(f"{archive.path}: key '{GRAPH_KEY}': JSON nested too deeply") from None
    if not isinstance(graph, dict) or graph.get("format") != "sparsenet":
        raise FormatError(f"{archive.path}: key '{GRAPH_KEY}' is not a sparsenet graph")
    version = graph.get("version")
    if type(version) is not int or version not in _READ_VERSIONS:  # not 1.0 or true, as the C++ loader
        raise FormatError(f"{archive.path}: format version {version!r} is not supported "
                          f"(this sparsenet reads versions 1 to {FORMAT_VERSION})")
    entries = graph.get("layers")
    if not isinstance(entries, list) or not entries:
        raise FormatError(f"{archive.path}: the graph has no layer list")
    layers: list[Layer] = []
    for index, entry in enumerate(entries):
        where = f"{archive.path}: layer {index}"
        try:
            if not isinstance(entry, dict):
                raise FormatError(f"{where}: not an object")
            name = _field(entry, "name", str, where)
            kind = _field(entry, "kind", str, where)
            where = f"{archive.path}: layer {index} '{name}'"
            layers.append(_build_layer(archive, entry, kind, name, where))
        except ModelError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise FormatError(f"{where}: malformed layer description: {exc!r}") from None
    input_shape = graph.get("input_shape")
    if input_shape is not None and (not isinstance(input_shape, list)
                                    or not all(type(d) is int and 0 < d < 2**31 for d in input_shape)):
        raise FormatError(f"{archive.path}: input_shape {input_shape!r} is not a list of positive ints")
    name = graph.get("name")
    check_dense_budget(archive, [layer.weight for layer in layers if isinstance(layer, _Weighted)], backend)
    return Model(layers, backend=backend, input_shape=input_shape, name=name if isinstance(name, str) else None)


def _build_layer(archive: NpzArchive, entry: dict, kind: str, name: str, where: str) -> Layer:
    if kind == "linear":
        weight, bias = _read_weighted(archive, entry, name, where)
        return Linear(weight, bias, name=name)
    if kind == "conv2d":
        weight, bias = _read_weighted(archive, entry, name, where)
        if len(weight.shape) != 4:
            raise FormatError(f"{where}: conv2d weight shape {weight.shape} must be (O, I, kh, kw)")
        return Conv2d(weight, bias, stride=entry.get("stride", 1), padding=entry.get("padding", 0), name=name,
                      same_padding=_bool_field(entry, "same_padding", False, where))
    if kind in ("maxpool2d", "avgpool2d"):
        args = dict(kernel_size=_field(entry, "kernel_size", (list, int), where), stride=entry.get("stride"),
                    padding=entry.get("padding", 0), ceil_mode=_bool_field(entry, "ceil_mode", False, where),
                    same_padding=_bool_field(entry, "same_padding", False, where),
                    input_size=entry.get("input_size"), name=name)
        if kind == "maxpool2d":
            return MaxPool2d(**args)
        return AvgPool2d(**args, count_include_pad=_bool_field(entry, "count_include_pad", True, where))
    if kind == "dropout":
        p = entry.get("p", 0.5)
        if type(p) not in (int, float):
            raise FormatError(f"{where}: dropout p must be a number in [0, 1)")
        return Dropout(p, name=name)
    simple = {"relu": ReLU, "flatten": Flatten, "softmax": Softmax, "globalavgpool2d": GlobalAvgPool2d}
    if kind in simple:
        return simple[kind](name=name)
    raise FormatError(f"{where}: unknown layer kind {kind!r} (known: linear, conv2d, maxpool2d, avgpool2d, "
                      "globalavgpool2d, relu, flatten, softmax, dropout)")


def file_sizes(model: Model, directory: str | os.PathLike) -> dict[str, int]:
    """Bytes on disk of ``model`` as a sparsenet file and as a plain dense fp32 ``.npz``."""
    directory = os.fspath(directory)
    sparse_path = os.path.join(directory, "model.sparsenet.npz")
    dense_path = os.path.join(directory, "model.dense.npz")
    model.save(sparse_path)
    dense = {}
    for layer in model.layers:
        if isinstance(layer, _Weighted):
            dense[f"{layer.name}.weight"] = layer.weight.to_dense()
            if layer.bias is not None:
                dense[f"{layer.name}.bias"] = layer.bias
    with open(dense_path, "wb") as handle:
        np.savez(handle, **dense)
    return {"sparsenet": os.path.getsize(sparse_path), "dense": os.path.getsize(dense_path)}


__all__ = ["save_model", "load_model", "file_sizes", "FORMAT_VERSION", "GRAPH_KEY"]
