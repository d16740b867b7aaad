"""Weights exported by other tools, read against a built-in architecture.

For each weighted layer of the architecture (name N, or one of its aliases,
matched case-insensitively) the file may hold:

* PyTorch-style dense arrays with zeros: ``N.weight`` (O, I, kh, kw) or
  (out, in), and ``N.bias``;
* scipy CSR groups, as ``scipy.sparse.save_npz`` writes a matrix:
  ``N.weight.data``, ``N.weight.indices``, ``N.weight.indptr``,
  ``N.weight.shape``, optionally ``N.weight.format`` (which must say csr) and
  ``N.weight._is_array`` (also under the prefixes ``N.weight/`` or ``N/``),
  with the matrix view (O, I*kh*kw) or (out, in), and ``N.bias``;
* TensorFlow SparseTensor triplets: ``w_N`` values, ``w_N_idx`` indices
  [nnz, rank], ``w_N_shape`` dense shape, and ``b_N`` bias (a dense ``w_N``
  without ``_idx`` is read too), in TensorFlow's kernel layouts
  (kh, kw, in, out) and (in, out), or FC weights stored transposed (out, in).
  The layout is recognised from the shape; where both readings fit, pass
  ``tf_fc_layout="in_out"`` or ``"out_in"``. TensorFlow flattens feature maps
  in (H, W, C) order, so the first FC layer after a convolution gets its input
  columns permuted to sparsenet's (C, H, W) order (``flatten_order="hwc"``, the
  default for TensorFlow weights; pass ``"chw"`` if they were already permuted).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ._npz import NpzArchive
from .errors import FormatError
from .format import check_dense_budget
from .layers import SparseWeight
from .model import Model
from .models import Architecture, LayerSpec, build, get_architecture

_GROUP_PARTS = ("data", "indices", "indptr", "shape")


def _flatten_inputs(arch: Architecture) -> dict[str, tuple[int, int, int]]:
    """For each Linear fed by a Flatten of a feature map: that map's (C, H, W)."""
    shape: tuple[int, ...] = arch.input_shape
    fed: dict[str, tuple[int, int, int]] = {}
    flattened_from = None
    for s in arch.layers:
        if s.kind == "conv2d":
            o, _, kh, kw = s.weight_shape
            shape = (o, (shape[1] + 2 * s.padding - kh) // s.stride + 1, (shape[2] + 2 * s.padding - kw) // s.stride + 1)
        elif s.kind == "maxpool2d":
            shape = (shape[0], shape[1] // s.pool, shape[2] // s.pool)
        elif s.kind == "flatten":
            flattened_from = shape if len(shape) == 3 else None
            shape = (int(np.prod(shape)),)
        elif s.kind == "linear":
            if flattened_from is not None:
                fed[s.name] = flattened_from
            flattened_from = None
            shape = (s.weight_shape[0],)
    return fed


class _Keys:
    def __init__(self, archive: NpzArchive):
        self.archive = archive
        self.by_lower = {k.lower(): k for k in archive.keys()}
        self.used: set[str] = set()

    def find(self, candidate: str) -> str | None:
        return self.by_lower.get(candidate.lower())

    def read(self, key: str, kinds: str, context: str) -> np.ndarray:
        self.used.add(key)
        return self.archive.read(key, kinds, context)


def _coo_to_csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int) -> tuple:
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr, cols[order], values[order]


def _tf_weight(keys: _Keys, spec: LayerSpec, base: str, options: dict, context: str,
               fed_by: tuple[int, int, int] | None) -> SparseWeight:
    shape = spec.weight_shape
    values_key = keys.find(base)
    idx_key = keys.find(f"{base}_idx")
    shape_key = keys.find(f"{base}_shape")
    where = f"{keys.archive.path}: {context} key '{values_key}'"
    if idx_key is not None:
        values = keys.read(values_key, "f", context)
        indices = keys.read(idx_key, "iu", context)
        if shape_key is None:
            raise FormatError(f"{where}: the triplet has no '{base}_shape' key")
        dense_shape = tuple(int(d) for d in keys.read(shape_key, "iu", context).reshape(-1))
        if values.ndim != 1 or indices.ndim != 2 or indices.shape != (values.size, len(dense_shape)):
            raise FormatError(f"{where}: indices {indices.shape} must be [nnz, rank] = [{values.size}, "
                              f"{len(dense_shape)}] for values {values.shape} and dense_shape {dense_shape}")
        indices = indices.astype(np.int64)
        if indices.size and ((indices < 0).any() or (indices >= np.array(dense_shape)).any()):
            raise FormatError(f"{where}: an index lies outside dense_shape {dense_shape}")
    else:
        dense = keys.read(values_key, "f", context)
        dense_shape = dense.shape
        indices = np.argwhere(dense != 0)
        values = dense[tuple(indices.T)] if dense.ndim else dense.reshape(-1)

    if len(shape) == 4:
        o, i, kh, kw = shape
        if dense_shape == (kh, kw, i, o):
            y, x, c, out = indices.T
        elif dense_shape == (o, i, kh, kw):
            out, c, y, x = indices.T
        else:
            raise FormatError(f"{where}: dense_shape {dense_shape} fits neither (kh, kw, in, out) = {(kh, kw, i, o)} "
                              f"nor (out, in, kh, kw) = {shape}")
        rows, cols = out, (c * kh + y) * kw + x
    else:
        out_f, in_f = shape
        layout = options.get("tf_fc_layout")
        fits = {"in_out": dense_shape == (in_f, out_f), "out_in": dense_shape == (out_f, in_f)}
        if layout is None:
            matches = [k for k, ok in fits.items() if ok]
            if len(matches) != 1:
                raise FormatError(f"{where}: dense_shape {dense_shape} is "
                                  + ("ambiguous: pass tf_fc_layout='in_out' or 'out_in'" if matches else
                                     f"neither (in, out) = {(in_f, out_f)} nor (out, in) = {shape}"))
            layout = matches[0]
        elif layout not in fits:
            raise FormatError(f"tf_fc_layout must be 'in_out' or 'out_in', got {layout!r}")
        elif not fits[layout]:
            raise FormatError(f"{where}: dense_shape {dense_shape} does not fit tf_fc_layout={layout!r} for {shape}")
        rows, cols = (indices[:, 1], indices[:, 0]) if layout == "in_out" else (indices[:, 0], indices[:, 1])
        order = options.get("flatten_order", "hwc")
        if order not in ("hwc", "chw"):
            raise FormatError(f"flatten_order must be 'hwc' or 'chw', got {order!r}")
        if fed_by is not None and order == "hwc":
            c_, h_, w_ = fed_by
            hw, ch = np.divmod(cols, c_)
            cols = ch * (h_ * w_) + hw
    indptr, col_sorted, val_sorted = _coo_to_csr(rows.astype(np.int64), cols.astype(np.int64),
                                                 np.asarray(values, np.float32), shape[0])
    return SparseWeight(shape, indptr, col_sorted, val_sorted, f"{context} key '{values_key}'")


def _find_group(keys: _Keys, names: list[str]) -> str | None:
    for name in names:
        for prefix in (f"{name}.weight.", f"{name}.weight/", f"{name}/"):
            if all(keys.find(prefix + part) for part in _GROUP_PARTS):
                return prefix
    return None


def _layer_weights(keys: _Keys, spec: LayerSpec, options: dict, fed_by) -> tuple[SparseWeight, np.ndarray]:
    names = [spec.name, *spec.aliases]
    context = f"{spec.kind} layer '{spec.name}'"
    shape = spec.weight_shape
    matrix_shape = (shape[0], int(np.prod(shape[1:])))
    weight = None
    bias_keys = [f"{n}.bias" for n in names] + [f"b_{n}" for n in names]
    for name in names:
        key = keys.find(f"{name}.weight")
        if key is not None:
            dense = keys.read(key, "f", context)
            if dense.shape not in (shape, matrix_shape):
                hint = " (it looks transposed: PyTorch stores (out, in))" if dense.shape == matrix_shape[::-1] else ""
                raise FormatError(f"{keys.archive.path}: {context} key '{key}': shape {dense.shape}, expected {shape}{hint}")
            weight = SparseWeight.from_dense(dense.reshape(shape), f"{context} key '{key}'")
            break
    if weight is None:
        prefix = _find_group(keys, names)
        if prefix is not None:
            parts = {p: keys.read(keys.find(prefix + p), "iuf" if p == "data" else "iu", context) for p in _GROUP_PARTS}
            format_key = keys.find(prefix + "format")  # save_npz records the sparse format too
            if format_key is not None:
                stored = keys.read(format_key, "SU", context)
                value = stored.item() if stored.shape == () else None
                value = value.decode("ascii", "replace") if isinstance(value, bytes) else value
                if value != "csr":
                    raise FormatError(f"{keys.archive.path}: {context} key '{format_key}': sparse format {value!r}; "
                                      "only CSR groups can be read (convert with .tocsr())")
            is_array_key = keys.find(prefix + "_is_array")  # save_npz of a scipy sparse array, not matrix
            if is_array_key is not None:
                keys.read(is_array_key, "b", context)
            group_shape = tuple(int(d) for d in parts["shape"].reshape(-1))
            if group_shape != matrix_shape:
                raise FormatError(f"{keys.archive.path}: {context} key '{prefix}shape': {group_shape}, expected "
                                  f"{matrix_shape} (the matrix view of weight {shape})")
            data = parts["data"]
            if data.dtype.kind != "f":
                raise FormatError(f"{keys.archive.path}: {context} key '{prefix}data': dtype {data.dtype} is not float")
            weight = SparseWeight(shape, parts["indptr"], parts["indices"], data, f"{context} key '{prefix}data'")
    if weight is None:
        for name in names:
            if keys.find(f"w_{name}") is not None:
                weight = _tf_weight(keys, spec, f"w_{name}", options, context, fed_by)
                break
    if weight is None:
        tried = ", ".join(f"'{n}.weight'" for n in names) + ", scipy groups, " + ", ".join(f"'w_{n}'" for n in names)
        raise FormatError(f"{keys.archive.path}: {context}: no weight found (tried {tried})")
    bias = None
    for candidate in bias_keys:
        key = keys.find(candidate)
        if key is not None:
            bias = keys.read(key, "f", context).reshape(-1)
            if bias.shape != (shape[0],):
                raise FormatError(f"{keys.archive.path}: {context} key '{key}': bias shape {bias.shape}, "
                                  f"expected ({shape[0]},)")
            break
    if bias is None:
        raise FormatError(f"{keys.archive.path}: {context}: no bias found (tried {', '.join(bias_keys)})")
    return weight, bias


def import_arch(archive: NpzArchive, arch: str, backend: str, **options: Any) -> Model:
    unknown = set(options) - {"tf_fc_layout", "flatten_order"}
    if unknown:
        raise FormatError(f"unknown import options {sorted(unknown)} (known: tf_fc_layout, flatten_order)")
    spec = get_architecture(arch)
    keys = _Keys(archive)
    fed = _flatten_inputs(spec)
    weights = {s.name: _layer_weights(keys, s, options, fed.get(s.name)) for s in spec.weighted()}
    unused = sorted(set(archive.keys()) - keys.used)
    if unused:
        warnings.warn(f"{archive.path}: keys not used by architecture {arch!r}: {', '.join(unused)}", stacklevel=3)
    check_dense_budget(archive, [weight for weight, _ in weights.values()], backend)
    return build(spec, weights, backend)
