"""Layer objects for composing models, like ``torch.nn`` modules.

Weights are given as dense arrays (zeros are pruned connections), as
``scipy.sparse`` matrices, or as :class:`SparseWeight`. Each weighted layer
keeps its weight in CSR form; the engine runs it sparse or dense.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any, Sequence

import numpy as np

from . import _core
from .errors import FormatError, WeightError


def _narrowest_unsigned(max_value: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise WeightError(f"value {max_value} does not fit any unsigned integer type")


# What np.savez stores per member besides the array bytes: a 128-byte .npy
# header, a zip local header (30 bytes, the name, a 20-byte zip64 extra field)
# and a central-directory entry (46 bytes and the name again).
def _npz_member_overhead(key: str) -> int:
    name = len(key.encode()) + len(".npy")
    return 128 + 30 + name + 20 + 46 + name


def _layer_label(kind: str, name: str | None) -> str:
    """How messages name a layer: "conv2d layer 'c1'", or "unnamed conv2d layer"
    for one built outside a Model (a Model names every layer)."""
    return f"{kind} layer '{name}'" if name is not None else f"unnamed {kind} layer"


def _key_label(kind: str, name: str | None, part: str) -> str:
    return f"{kind} layer '{name}' key '{name}.{part}'" if name is not None else f"unnamed {kind} layer, {part}"


def _pair(value: Any, what: str, layer: str) -> tuple[int, int]:
    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < 2**31

    if is_int(value):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value):
        return int(value[0]), int(value[1])
    raise FormatError(f"{layer}: {what} must be an int or a pair of ints in [0, 2^31), got {value!r}")


class SparseWeight:
    """A weight in CSR form over its 2-D matrix view.

    ``shape`` is the logical shape: ``(out, in)`` for Linear, ``(O, I, kh, kw)``
    for Conv2d, whose matrix view is ``(O, I*kh*kw)``. ``indptr``/``indices``
    are int64, ``data`` float32; ``validate`` checks every CSR invariant. Each
    row's nonzeros may come in any column order; they are kept sorted by
    column (stably: repeated columns, which add up, keep their order), as the
    engine keeps them.
    """

    def __init__(self, shape: Sequence[int], indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                 context: str = "weight"):
        self.shape = tuple(int(s) for s in shape)
        self.context = context
        if len(self.shape) not in (2, 4) or any(s < 1 for s in self.shape):
            raise WeightError(f"{context}: weight shape {self.shape} must be (out, in) or (O, I, kh, kw), "
                              "every size at least 1")
        self.indptr = self._as_index_array(indptr, "indptr")
        self.indices = self._as_index_array(indices, "indices")
        data = np.asarray(data)
        if data.dtype.kind != "f" or data.ndim != 1:
            raise WeightError(f"{context}: data must be a 1-D float array, got {data.dtype} {data.shape}")
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        self.validate()
        self._sort_rows()

    def _sort_rows(self) -> None:
        if self.indices.size < 2:
            return
        falls = np.diff(self.indices) < 0
        starts = self.indptr[1:-1]
        falls[starts[(starts > 0) & (starts < self.indices.size)] - 1] = False  # across a row boundary
        if not falls.any():
            return
        rows = np.repeat(np.arange(self.rows, dtype=np.int64), np.diff(self.indptr))
        order = np.lexsort((self.indices, rows))  # stable
        self.indices = self.indices[order]
        self.data = self.data[order]

    def _as_index_array(self, array: np.ndarray, what: str) -> np.ndarray:
        array = np.asarray(array)
        if array.dtype.kind not in "iu" or array.ndim != 1:
            raise WeightError(f"{self.context}: {what} must be a 1-D integer array, got {array.dtype} {array.shape}")
        if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
            raise WeightError(f"{self.context}: {what} holds a value beyond int64")
        return np.ascontiguousarray(array, dtype=np.int64)

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return int(np.prod(self.shape[1:]))

    @property
    def nnz(self) -> int:
        return int(self.data.size)

    @property
    def density(self) -> float:
        total = self.rows * self.cols
        return self.nnz / total if total else 0.0

    def __repr__(self) -> str:
        return f"SparseWeight(shape={self.shape}, nnz={self.nnz}, density={self.density:.2%})"

    def validate(self) -> None:
        """Raise WeightError unless this is a well-formed CSR matrix with finite values
        (the engine's own check, the same one every layer build runs)."""
        _core.validate_csr(self.context, self.rows, self.cols, self.indptr, self.indices, self.data)

    @classmethod
    def from_dense(cls, weight: np.ndarray, context: str = "weight") -> "SparseWeight":
        weight = np.asarray(weight)
        if weight.dtype.kind not in "fiu":
            raise WeightError(f"{context}: weight dtype {weight.dtype} is not numeric")
        if weight.ndim not in (2, 4):
            raise WeightError(f"{context}: dense weight must be 2-D (out, in) or 4-D (O, I, kh, kw), got {weight.shape}")
        if weight.size == 0:
            raise WeightError(f"{context}: weight shape {weight.shape} must be (out, in) or (O, I, kh, kw), "
                              "every size at least 1")
        matrix = weight.reshape(weight.shape[0], -1)
        if not np.isfinite(matrix).all():
            raise WeightError(f"{context}: weight {weight.shape} contains NaN or Inf")
        mask = matrix != 0
        indptr = np.zeros(matrix.shape[0] + 1, dtype=np.int64)
        np.cumsum(mask.sum(axis=1), out=indptr[1:])
        _, indices = np.nonzero(mask)
        return cls(weight.shape, indptr, indices, matrix[mask].astype(np.float32), context)

    @classmethod
    def from_scipy(cls, matrix: Any, shape: Sequence[int] | None = None, context: str = "weight") -> "SparseWeight":
        csr = matrix.tocsr()
        csr.sum_duplicates()
        shape = tuple(shape) if shape is not None else csr.shape
        if (shape[0], int(np.prod(shape[1:]))) != tuple(csr.shape):
            raise WeightError(f"{context}: scipy matrix of shape {csr.shape} does not match weight shape {shape}")
        return cls(shape, csr.indptr, csr.indices, csr.data, context)

    @classmethod
    def coerce(cls, weight: Any, shape: Sequence[int] | None, context: str) -> "SparseWeight":
        if isinstance(weight, SparseWeight):
            return weight
        if hasattr(weight, "tocsr") and hasattr(weight, "nnz"):
            return cls.from_scipy(weight, shape, context)
        weight = np.asarray(weight)
        if shape is not None and weight.ndim == 2 and len(shape) == 4:
            weight = weight.reshape(shape)
        return cls.from_dense(weight, context)

    def to_dense(self) -> np.ndarray:
        out = np.zeros((self.rows, self.cols), dtype=np.float32)
        rows = np.repeat(np.arange(self.rows), np.diff(self.indptr))
        np.add.at(out, (rows, self.indices), self.data)
        return out.reshape(self.shape)

    # Storage accounting, as the .npz writer stores it.
    def index_dtype(self) -> np.dtype:
        return _index_dtype(self.cols)

    def indptr_dtype(self) -> np.dtype:
        return _narrowest_unsigned(self.nnz)

    def csr_bytes(self) -> int:
        return _csr_bytes(self.rows, self.cols, self.nnz)

    def dense_bytes(self) -> int:
        return self.rows * self.cols * 4

    def storage(self, name: str = "") -> str:
        """"csr" or "dense", whichever gives the smaller file: the array bytes plus
        what np.savez adds per member (CSR takes three, ``name.weight.data`` etc.;
        dense one, ``name.weight``), so small layers never grow the file."""
        return _storage(self.rows, self.cols, self.nnz, name)

    def stored_bytes(self, name: str = "") -> int:
        return self.csr_bytes() if self.storage(name) == "csr" else self.dense_bytes()


# The accounting above needs only the matrix view's size and nnz, so a layer
# answers it without its arrays (which it may have handed to the engine).
def _index_dtype(cols: int) -> np.dtype:
    return _narrowest_unsigned(max(cols - 1, 0))


def _csr_bytes(rows: int, cols: int, nnz: int) -> int:
    return nnz * (4 + _index_dtype(cols).itemsize) + (rows + 1) * _narrowest_unsigned(nnz).itemsize


def _storage(rows: int, cols: int, nnz: int, name: str) -> str:
    key = f"{name}.weight"
    csr = _csr_bytes(rows, cols, nnz) + sum(_npz_member_overhead(f"{key}.{part}") for part in ("data", "indices", "indptr"))
    return "csr" if csr < rows * cols * 4 + _npz_member_overhead(key) else "dense"


class Layer:
    """Base class. ``kind`` names the layer type in files and summaries.

    A layer is read-only once a :class:`Model` has built it: the engine holds
    its own copy of the weights and settings, so a change made afterwards would
    show in ``save`` and ``summary`` but not in the forward pass. Build a new
    layer and Model to change one (``sparsenet.prune`` does).
    """

    kind = "layer"
    _frozen = False

    def __init__(self, name: str | None = None):
        self.name = name
        self._backend: str | None = None  # set when a Model builds the layer

    def __setattr__(self, key: str, value: Any) -> None:
        if self._frozen and not key.startswith("_"):
            raise AttributeError(f"{self.kind} layer '{self.name}': '{key}' cannot change once a Model has built "
                                 "the layer (its engine keeps its own copy); build a new layer and Model instead")
        object.__setattr__(self, key, value)

    @property
    def backend(self) -> str | None:
        """What the Model that built this layer runs it with: "sparse", "dense",
        "auto" (chosen per input size, see ``choices``) or None before a build."""
        return self._backend

    def _built(self, backend: str | None) -> None:
        """Called by Model once it has built this layer: from now on read-only."""
        self._backend = backend
        self._frozen = True

    def _unbuilt_copy(self) -> "Layer":
        """A deep copy that a new Model may build (non-weighted layers only)."""
        clone = copy.deepcopy(self)
        object.__setattr__(clone, "_frozen", False)
        clone._backend = None
        return clone

    # Summary facts; weighted layers override.
    shape: tuple = ()
    nnz = 0
    density = None
    storage = "-"
    stored_bytes = 0
    dense_bytes = 0

    def config(self) -> dict:
        return {}

    def _build(self, backend: str) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args}{', ' if args else ''}name={self.name!r})"


class _Weighted(Layer):
    """A layer with a weight and an optional bias.

    Once a :class:`Model` has built the layer into an engine that keeps the CSR
    weight (sparse and auto backends), the layer drops its own copy (int64
    indices: twice the engine's bytes) and ``weight`` rebuilds it from the
    engine when asked: the same arrays as the SparseWeight it was built from
    (rows sorted); it stays cached while anyone holds it. Shape, nnz and
    storage facts never need the arrays.
    """

    def __init__(self, weight: Any, bias: Any, name: str | None, shape_hint: Sequence[int] | None):
        super().__init__(name)
        context = _key_label(self.kind, name, "weight")
        self._weight: SparseWeight | None = SparseWeight.coerce(weight, shape_hint, context)
        self._weight_ref: weakref.ref | None = None
        self._core: Any = None
        self._shape: tuple = self._weight.shape
        self._nnz: int = self._weight.nnz
        if bias is None:
            self.bias = None
        else:
            bias = np.asarray(bias)
            if bias.dtype.kind != "f" or bias.shape != (self._weight.rows,):
                raise WeightError(f"{_key_label(self.kind, name, 'bias')}: bias {bias.dtype} {bias.shape} must be "
                                  f"float of shape ({self._weight.rows},) for weight {self._weight.shape}")
            if not np.isfinite(bias).all():
                raise WeightError(f"{_key_label(self.kind, name, 'bias')}: bias contains NaN or Inf")
            self.bias = np.array(bias, dtype=np.float32, order="C")  # ours: read-only once built

    @property
    def weight(self) -> SparseWeight:
        if self._weight is not None:
            return self._weight
        weight = self._weight_ref() if self._weight_ref is not None else None
        if weight is None:
            indptr, indices, data = self._core.weight_arrays()
            weight = SparseWeight(self._shape, indptr, indices, data,
                                  f"{self.kind} layer '{self.name}' key '{self.name}.weight'")
            self._weight_ref = weakref.ref(weight)
        return weight

    def _attach(self, core: Any) -> None:
        """Called by Model once it has built this layer into ``core``."""
        if core.holds_csr:
            self._weight = None  # weight_arrays() gives it back exactly
        else:
            self._weight = self.weight  # a dense engine keeps no CSR: keep ours
        self._weight_ref = None
        self._core = core

    def _built(self, backend: str | None) -> None:
        super()._built(backend)
        if self.bias is not None:
            self.bias.flags.writeable = False

    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def choices(self) -> dict:
        """For backend "auto": what was measured fastest per input size so far,
        "sparse", "dense" or (stride-1 convolutions) "dense-direct" or "dense-winograd".
        Keys: the batch bucket for Linear, (height, width, batch bucket) for
        Conv2d; the bucket is the batch size up to 8, then the next power of two,
        of the batch the layer runs at once: 1 where a Model takes a batch image
        by image through its leading convolutions (two or more images a worker)."""
        return dict(self._core.choices) if self._core is not None else {}

    @property
    def _rows_cols(self) -> tuple[int, int]:
        return self._shape[0], int(np.prod(self._shape[1:]))

    @property
    def nnz(self) -> int:
        return self._nnz

    @property
    def density(self) -> float:
        rows, cols = self._rows_cols
        return self._nnz / (rows * cols) if rows * cols else 0.0

    @property
    def storage(self) -> str:
        return _storage(*self._rows_cols, self._nnz, self.name or "")

    @property
    def stored_bytes(self) -> int:
        rows, cols = self._rows_cols
        weight = _csr_bytes(rows, cols, self._nnz) if self.storage == "csr" else rows * cols * 4
        return weight + (self.bias.nbytes if self.bias is not None else 0)

    @property
    def dense_bytes(self) -> int:
        rows, cols = self._rows_cols
        return rows * cols * 4 + (self.bias.nbytes if self.bias is not None else 0)

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.config().items())
        return (f"{type(self).__name__}(shape={self._shape}, nnz={self._nnz}, density={self.density:.2%}"
                f"{args}, name={self.name!r})")

    def with_weights(self, weight: Any, bias: Any) -> "_Weighted":
        """A new, unbuilt layer of this kind, name and settings over other
        weights (a folded BatchNorm, a pruned copy)."""
        raise NotImplementedError

    def _rename(self, name: str) -> None:
        object.__setattr__(self, "name", name)
        if self._weight is not None:
            self._weight.context = _key_label(self.kind, name, "weight")


class Linear(_Weighted):
    """Fully connected: ``y = x W^T + b`` with ``W`` of shape (out_features, in_features)."""

    kind = "linear"

    def __init__(self, weight: Any, bias: Any = None, name: str | None = None):
        super().__init__(weight, bias, name, None)
        if len(self._shape) != 2:
            raise WeightError(f"{_layer_label('linear', name)}: weight must be 2-D (out, in), got {self._shape}")

    def with_weights(self, weight: Any, bias: Any) -> "Linear":
        return Linear(weight, bias, name=self.name)

    @property
    def in_features(self) -> int:
        return self._shape[1]

    @property
    def out_features(self) -> int:
        return self._shape[0]

    def config(self) -> dict:
        return {}

    def _build(self, backend: str) -> Any:
        w = self.weight
        return _core.Linear(self.name, f"{self.name}.weight", w.rows, w.cols, w.indptr, w.indices, w.data,
                            self.bias, backend)


class Conv2d(_Weighted):
    """2-D convolution over NCHW input; weight (out_channels, in_channels, kh, kw).

    ``padding`` is an int, a pair, ``"valid"`` or ``"same"`` (stride 1, odd kernels).
    A ``scipy.sparse`` weight of shape (O, I*kh*kw) needs ``kernel_size``.
    ``same_padding=True`` marks ``padding`` as TensorFlow / ONNX 'SAME' resolved
    for one input size (the importers set it): input sizes whose 'SAME' padding
    differs, which would run with shifted windows, raise ``ShapeError``.
    """

    kind = "conv2d"

    def __init__(self, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                 name: str | None = None, kernel_size: Any = None, in_channels: int | None = None,
                 same_padding: bool = False):
        shape_hint = None
        if kernel_size is not None and not isinstance(weight, SparseWeight):
            kh, kw = _pair(kernel_size, "kernel_size", _layer_label(self.kind, name))
            rows = weight.shape[0]
            cols = int(np.prod(weight.shape[1:]))
            if cols % (kh * kw):
                raise WeightError(f"{_layer_label('conv2d', name)}: weight {weight.shape} does not fit kernel {kh}x{kw}")
            shape_hint = (rows, in_channels or cols // (kh * kw), kh, kw)
        super().__init__(weight, bias, name, shape_hint)
        if len(self._shape) != 4:
            raise WeightError(f"{_layer_label('conv2d', name)}: weight must be 4-D (O, I, kh, kw), got {self._shape}; "
                              "pass kernel_size for a 2-D sparse weight")
        self.stride = _pair(stride, "stride", _layer_label(self.kind, name))
        kh, kw = self._shape[2:]
        if isinstance(padding, str):
            if padding == "valid":
                padding = 0
            elif padding == "same":
                if self.stride != (1, 1) or kh % 2 == 0 or kw % 2 == 0:
                    raise FormatError(f"{_layer_label('conv2d', name)}: padding='same' needs stride 1 and an odd kernel")
                padding = (kh // 2, kw // 2)
            else:
                raise FormatError(f"{_layer_label('conv2d', name)}: padding must be an int, a pair, 'same' or 'valid'")
        self.padding = _pair(padding, "padding", _layer_label(self.kind, name))
        if min(self.stride) < 1 or min(self.padding) < 0:
            raise FormatError(f"{_layer_label('conv2d', name)}: stride must be >= 1 and padding >= 0")
        self.same_padding = bool(same_padding)

    def with_weights(self, weight: Any, bias: Any) -> "Conv2d":
        return Conv2d(weight, bias, stride=self.stride, padding=self.padding, name=self.name,
                      same_padding=self.same_padding)

    @property
    def in_channels(self) -> int:
        return self._shape[1]

    @property
    def choices(self) -> dict:
        # The engine keys a choice by (height * R + width) * R + batch bucket
        # (Conv2d::forward in layers.cc, R = 1000003): given back as a tuple.
        radix = 1000003
        return {(key // radix // radix, key // radix % radix, key % radix): choice
                for key, choice in super().choices.items()}

    @property
    def out_channels(self) -> int:
        return self._shape[0]

    @property
    def kernel_size(self) -> tuple[int, int]:
        return self._shape[2], self._shape[3]

    def config(self) -> dict:
        config = {"stride": list(self.stride), "padding": list(self.padding)}
        return {**config, "same_padding": True} if self.same_padding else config

    def _build(self, backend: str) -> Any:
        w = self.weight
        o, i, kh, kw = w.shape
        return _core.Conv2d(self.name, f"{self.name}.weight", o, i, kh, kw, *self.stride, *self.padding,
                            w.indptr, w.indices, w.data, self.bias, backend, self.same_padding)


class _Pool2d(Layer):
    mode = "max"

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 name: str | None = None, same_padding: bool = False, input_size: Any = None):
        super().__init__(name)
        self.kernel_size = _pair(kernel_size, "kernel_size", _layer_label(self.kind, name))
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", _layer_label(self.kind, name))
        self.padding = _pair(padding, "padding", _layer_label(self.kind, name))
        self.ceil_mode = bool(ceil_mode)
        self.same_padding = bool(same_padding)  # as for Conv2d
        # The (H, W) the window was resolved for (an adaptive pool's import): other sizes raise ShapeError.
        self.input_size = None if input_size is None else _pair(input_size, "input_size", _layer_label(self.kind, name))

    def config(self) -> dict:
        config = {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                  "padding": list(self.padding), "ceil_mode": self.ceil_mode}
        if self.same_padding:
            config["same_padding"] = True
        if self.input_size is not None:
            config["input_size"] = list(self.input_size)
        return config

    def _build(self, backend: str) -> Any:
        return _core.Pool2d(self.name, self.mode, *self.kernel_size, *self.stride, *self.padding, self.ceil_mode,
                            getattr(self, "count_include_pad", True), self.same_padding, self.input_size or (0, 0))


class MaxPool2d(_Pool2d):
    kind = "maxpool2d"
    mode = "max"


class AvgPool2d(_Pool2d):
    kind = "avgpool2d"
    mode = "avg"

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, name: str | None = None, same_padding: bool = False,
                 input_size: Any = None):
        super().__init__(kernel_size, stride, padding, ceil_mode, name, same_padding, input_size)
        self.count_include_pad = bool(count_include_pad)

    def config(self) -> dict:
        return {**super().config(), "count_include_pad": self.count_include_pad}


class GlobalAvgPool2d(Layer):
    """The mean of each whole feature map, whatever its size: (N, C, H, W) ->
    (N, C, 1, 1), as ``nn.AdaptiveAvgPool2d(1)`` or ``x.mean((2, 3), keepdim=True)``."""

    kind = "globalavgpool2d"

    def _build(self, backend: str) -> Any:
        return _core.global_pool2d(self.name, "avg")


class ReLU(Layer):
    kind = "relu"

    def _build(self, backend: str) -> Any:
        return _core.ReLU(self.name)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in C, H, W order, as ``torch.flatten(x, 1)``."""

    kind = "flatten"

    def _build(self, backend: str) -> Any:
        return _core.Flatten(self.name)


class Softmax(Layer):
    kind = "softmax"

    def _build(self, backend: str) -> Any:
        return _core.Softmax(self.name)


class Dropout(Layer):
    """The identity at inference; ``p`` is kept for the record."""

    kind = "dropout"

    def __init__(self, p: float = 0.5, name: str | None = None):
        super().__init__(name)
        self.p = float(p)
        if not 0.0 <= self.p < 1.0:
            raise FormatError(f"{_layer_label('dropout', name)}: p must be in [0, 1), got {p!r}")

    def config(self) -> dict:
        return {"p": self.p}

    def _build(self, backend: str) -> Any:
        return _core.Dropout(self.name)


LAYER_KINDS = {cls.kind: cls for cls in (Linear, Conv2d, MaxPool2d, AvgPool2d, GlobalAvgPool2d, ReLU, Flatten,
                                         Softmax, Dropout)}
