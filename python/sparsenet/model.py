"""``sparsenet.Model``: a sequential network run by the C++ engine."""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import numpy as np

from . import _core
from ._core import DeviceError
from .errors import FormatError, InputError, ShapeError
from .layers import Conv2d, Flatten, GlobalAvgPool2d, Layer, Linear, _Pool2d, _Weighted

BACKENDS = ("auto", "sparse", "dense")
DEVICES = ("cpu", "cuda")


def _backend_label(layer: Layer) -> str:
    """The summary's backend column: for auto, what it chose so far."""
    if layer.backend != "auto" or not isinstance(layer, _Weighted):
        return layer.backend or "-"
    chosen = sorted(set(layer.choices.values()))
    return f"auto: {', '.join(chosen)}" if chosen else "auto (not run yet)"


def _static_chain_check(layers: Sequence[Layer]) -> None:
    """Check what can be checked without an input shape: channel and feature
    counts between consecutive weighted layers."""
    state: tuple[str, int | None] | None = None  # ("map", channels) or ("vec", features)
    previous = None
    for layer in layers:
        where = f"{layer.kind} layer '{layer.name}'"
        after = f" (after {previous.kind} layer '{previous.name}')" if previous is not None else ""
        if isinstance(layer, Conv2d):
            if state is not None and state[0] == "vec":
                raise ShapeError(f"{where} needs a (C, H, W) feature map but gets a feature vector{after}")
            if state is not None and state[1] != layer.in_channels:
                raise ShapeError(f"{where} expects {layer.in_channels} input channels (weight {layer.shape}) "
                                 f"but gets {state[1]}{after}")
            state = ("map", layer.out_channels)
        elif isinstance(layer, Linear):
            if state is not None and state[0] == "map":
                raise ShapeError(f"{where} needs a feature vector but gets a feature map{after}; add a Flatten")
            if state is not None and state[1] is not None and state[1] != layer.in_features:
                raise ShapeError(f"{where} expects {layer.in_features} input features (weight {layer.shape}) "
                                 f"but gets {state[1]}{after}")
            state = ("vec", layer.out_features)
        elif isinstance(layer, Flatten):
            if state is not None and state[0] == "map":
                state = ("vec", None)
        elif isinstance(layer, (_Pool2d, GlobalAvgPool2d)):
            if state is not None and state[0] == "vec":
                raise ShapeError(f"{where} needs a (C, H, W) feature map but gets a feature vector{after}")
        if isinstance(layer, (Conv2d, Linear, Flatten, _Pool2d, GlobalAvgPool2d)):  # the layer that shapes the data
            previous = layer


class Model:
    """A sequential network whose pruned layers run on sparse kernels.

    ``Model(layers, backend="auto")`` composes layer objects, like
    ``nn.Sequential``. ``backend="sparse"`` runs every weighted layer on CSR
    kernels, ``"dense"`` on the BLAS baseline. ``"auto"`` runs layers at most
    10 % dense sparse (``_core.AUTO_SPARSE_DENSITY``: sparse won there at every
    batch and map size measured, by 2x or more); every other layer keeps both forms
    and, the first time it meets an input size, times them and keeps the
    fastest (``layer.choices``): sparse, dense, and for stride-1 convolutions
    dense direct convolution (the dense weights against the padded input in
    register tiles, no im2col) and, for 3x3 and 5x5 kernels, dense Winograd
    convolution. So the first call with a new batch or image size is slower.
    ``input_shape`` (one sample, e.g. ``(1, 28, 28)``) is optional;
    when given, the whole chain of shapes is checked at construction.
    """

    def __init__(self, layers: Iterable[Layer], backend: str = "auto", input_shape: Sequence[int] | None = None,
                 name: str | None = None):
        self._layers: tuple[Layer, ...] = tuple(layers)
        if backend not in BACKENDS:
            raise FormatError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not self._layers:
            raise FormatError("a model needs at least one layer")
        self._backend = backend
        self.name = name
        self.input_shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
        seen: set[str] = set()
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise FormatError(f"layer {index} is a {type(layer).__name__}, not a sparsenet layer")
            if layer.name is None:
                layer_name = f"{layer.kind}{index}"
                if isinstance(layer, _Weighted):
                    layer._rename(layer_name)
                else:
                    layer.name = layer_name
            if layer.name in seen:
                raise FormatError(f"two layers are named '{layer.name}'; names must be unique")
            seen.add(layer.name)
        _static_chain_check(self.layers)
        self._core_layers = []
        for layer in self.layers:
            core = layer._build(backend)
            self._core_layers.append(core)
            if isinstance(layer, _Weighted):
                layer._attach(core)  # drops its Python copy now, not after the last layer: a lower peak
        self._engine = _core.Model(self._core_layers)
        if self.input_shape is not None:
            self._engine.output_shape(list(self.input_shape))
        for layer, core in zip(self.layers, self._core_layers):
            layer._built(getattr(core, "backend", None))

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The layers, in order; read-only once built (see :class:`Layer`)."""
        return self._layers

    def __len__(self) -> int:
        return len(self._layers)

    def __getitem__(self, key: int | str) -> Layer:
        """A layer by position or by name (``model["fc1"]``)."""
        if isinstance(key, str):
            for layer in self._layers:
                if layer.name == key:
                    return layer
            raise KeyError(f"no layer named {key!r}; layers: {', '.join(str(l.name) for l in self._layers)}")
        return self._layers[key]

    @property
    def backend(self) -> str:
        """"auto", "sparse" or "dense", as built; another backend needs a new
        Model (``Model(model.layers, backend=...)`` shares the layers)."""
        return self._backend

    # ----------------------------------------------------------------- running
    def __call__(self, x: Any) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: Any) -> np.ndarray:
        """Run a batch: ``x`` is (N, C, H, W) or (N, F); returns float32 (N, ...)."""
        array = _host_input(x)
        try:
            return self._engine.forward(array)
        except ShapeError as exc:
            raise ShapeError(f"input of shape {array.shape}: {exc}") from None

    def to(self, device: str, backend: str | None = None) -> "Model | CudaModel":
        """``"cpu"``: this model. ``"cuda"``: a :class:`CudaModel` running the same
        weights on the GPU (``backend`` defaults to this model's). Raises
        ``DeviceError`` when sparsenet was built without CUDA or no device is present."""
        if device not in DEVICES:
            raise DeviceError(f"device must be one of {DEVICES}, got {device!r}")
        if device == "cpu":
            return self
        return CudaModel(self, backend if backend is not None else self.backend)

    def output_shape(self, input_shape: Sequence[int] | None = None) -> tuple[int, ...]:
        """One sample's output shape for one sample's input shape."""
        shape = input_shape if input_shape is not None else self.input_shape
        if shape is None:
            raise ShapeError("no input shape given and the model has none")
        return tuple(self._engine.output_shape(list(shape)))

    # -------------------------------------------------------------- inspection
    @property
    def nnz(self) -> int:
        return sum(layer.nnz for layer in self.layers)

    @property
    def parameters(self) -> int:
        """Dense parameter count (weights and biases)."""
        return sum(layer.dense_bytes for layer in self.layers) // 4

    def summary(self) -> str:
        """A per-layer table: kind, shape, nnz, density, storage, bytes stored, dense bytes, backend."""
        header = ("layer", "kind", "weight shape", "nnz", "density", "storage", "stored", "dense", "backend")
        rows = [header]
        for layer in self.layers:
            weighted = isinstance(layer, _Weighted)
            rows.append((
                layer.name, layer.kind,
                "x".join(map(str, layer.shape)) if weighted else "-",
                f"{layer.nnz:,}" if weighted else "-",
                f"{100 * layer.density:.1f}%" if weighted else "-",
                layer.storage if weighted else "-",
                _human_bytes(layer.stored_bytes) if weighted else "-",
                _human_bytes(layer.dense_bytes) if weighted else "-",
                _backend_label(layer),
            ))
        stored = sum(layer.stored_bytes for layer in self.layers)
        dense = sum(layer.dense_bytes for layer in self.layers)
        total_dense_params = self.parameters
        density = self.nnz / max(1, sum(int(np.prod(l.shape)) for l in self.layers if isinstance(l, _Weighted)))
        rows.append(("total", "", "", f"{self.nnz:,}", f"{100 * density:.1f}%", "",
                     _human_bytes(stored), _human_bytes(dense), self.backend))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
        lines = []
        for index, row in enumerate(rows):
            if index == len(rows) - 1:
                lines.append("  ".join("-" * w for w in widths))
            lines.append("  ".join(str(cell).ljust(w) if i < 3 else str(cell).rjust(w)
                                   for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        title = f"{self.name or 'model'}: {len(self.layers)} layers, {total_dense_params:,} dense parameters"
        if self.input_shape:
            title += f", input {self.input_shape}"
        return title + "\n" + "\n".join(lines)

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, layers={len(self.layers)}, backend={self.backend!r})"

    # ------------------------------------------------------------------- files
    def save(self, path: str | os.PathLike, compress: bool = False) -> None:
        """Write the sparsenet ``.npz`` format (see docs/format.md)."""
        from .format import save_model

        save_model(self, path, compress=compress)

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "auto", arch: str | None = None, device: str = "cpu",
             **options: Any) -> "Model | CudaModel":
        """Load a sparsenet ``.npz``, or, with ``arch``, weights exported by other tools.

        ``arch`` names a built-in architecture (see ``sparsenet.models``); the file
        may then hold PyTorch-style dense arrays, scipy CSR groups or TensorFlow
        SparseTensor triplets (docs/format.md lists the key conventions).
        ``options``: ``max_bytes`` (read limit), ``tf_fc_layout`` ("in_out" or
        "out_in") and ``flatten_order`` ("chw" or "hwc") for TensorFlow exports.
        ``device="cuda"`` returns ``model.to("cuda")``.
        """
        from .format import load_model

        if device not in DEVICES:
            raise DeviceError(f"device must be one of {DEVICES}, got {device!r}")
        if device == "cuda":
            _require_cuda()  # before reading the file
        return load_model(path, backend=backend, arch=arch, **options).to(device)

    # ------------------------------------------------ other frameworks' models
    @classmethod
    def from_torch(cls, source: Any, example_input: Any = None, **options: Any) -> "Model":
        """From a PyTorch ``nn.Module`` (traced on ``example_input``), or a
        ``state_dict`` / ``.pt`` path with ``arch=`` (a built-in name or the
        module). ``options``: ``arch``, ``backend``, ``input_shape``, ``name``.
        Needs ``sparsenet[torch]``; see docs/importing.md."""
        from .frameworks._torch import from_torch

        return from_torch(source, example_input, **options)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, **options: Any) -> "Model":
        """From an ONNX file. ``options``: ``backend``, ``input_shape``, ``name``.
        Needs ``sparsenet[onnx]``; see docs/importing.md."""
        from .frameworks._onnx import from_onnx

        return from_onnx(path, **options)

    @classmethod
    def from_keras(cls, path: str | os.PathLike, **options: Any) -> "Model":
        """From a Keras ``.keras`` or ``.h5`` file, read without TensorFlow. The
        model takes NCHW input. ``options``: ``backend``, ``input_shape``, ``name``.
        Needs ``sparsenet[keras]``; see docs/importing.md."""
        from .frameworks._keras import from_keras

        return from_keras(path, **options)


def _host_input(x: Any) -> np.ndarray:
    """``x`` as a float32 C-contiguous (N, C, H, W) or (N, F) array."""
    try:
        array = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise InputError(f"input cannot be converted to an array: {exc}") from None
    if array.dtype.kind != "f":
        raise InputError(f"input dtype {array.dtype} is not floating point; convert explicitly, "
                         "e.g. x.astype(np.float32) / 255 for 8-bit images")
    if array.ndim not in (2, 4):
        hint = "; add a batch dimension, e.g. x[None]" if array.ndim in (1, 3) else ""
        raise ShapeError(f"input of shape {array.shape} must be (N, C, H, W) or (N, F){hint}")
    if array.dtype != np.float32 or not array.flags.c_contiguous:  # else: as it is, no copy
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes Inf, which the engine refuses
            array = np.ascontiguousarray(array, dtype=np.float32)
    return array  # NaN / Inf: the engine refuses them (InputError) before any layer runs


_BUILD_HINT = ("rebuild it with the CUDA path: pip install . -C cmake.define.SPARSENET_ENABLE_CUDA=ON "
               "(needs nvcc and cuBLAS; see README, section CUDA)")


def _require_cuda() -> None:
    if not _core.cuda_built():
        raise DeviceError(f"device='cuda': this sparsenet was built without CUDA; {_BUILD_HINT}")
    if not _core.cuda_available():
        raise DeviceError("device='cuda': sparsenet was built with CUDA but no CUDA device is usable "
                          "(no GPU, or no driver); sparsenet.cuda_available() tells beforehand")


class CudaModel:
    """A :class:`Model`'s weights on a CUDA device (``model.to("cuda")``).

    ``model(x)`` copies a host batch to the device once, runs every layer there
    and copies the output back once; the result is a numpy array. ``x`` may
    also be a float32 C-contiguous device array with ``__cuda_array_interface__``
    (CuPy, Numba, PyTorch), read in place without a host copy (it is not checked
    for NaN/Inf). Weighted layers run CSR kernels (``"sparse"``) or cuBLAS
    (``"dense"``); ``"auto"`` picks per layer by density (at most 10 % dense runs
    sparse, a threshold not yet measured on a GPU). ``layer_backends`` tells.
    """

    device = "cuda"

    def __init__(self, model: Model, backend: str = "auto"):
        if backend not in BACKENDS:
            raise FormatError(f"backend must be one of {BACKENDS}, got {backend!r}")
        _require_cuda()
        self.model = model
        self.backend = backend
        self._engine = _core.CudaModel(model._engine, backend)

    def __call__(self, x: Any) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: Any) -> np.ndarray:
        interface = getattr(x, "__cuda_array_interface__", None)
        if interface is not None:
            return self._forward_device(interface)
        array = _host_input(x)
        try:
            return self._engine.forward(array)
        except ShapeError as exc:
            raise ShapeError(f"input of shape {array.shape}: {exc}") from None

    def _forward_device(self, interface: dict) -> np.ndarray:
        shape = tuple(int(d) for d in interface["shape"])
        if interface.get("typestr") != "<f4":
            raise InputError(f"device input has typestr {interface.get('typestr')!r}; float32 ('<f4') is needed")
        strides = interface.get("strides")
        if strides is not None and tuple(strides) != tuple(int(np.prod(shape[i + 1:])) * 4 for i in range(len(shape))):
            raise InputError("device input must be C-contiguous")
        if len(shape) not in (2, 4):
            raise ShapeError(f"input of shape {shape} must be (N, C, H, W) or (N, F)")
        if interface.get("mask") is not None:
            raise InputError("masked device arrays are not supported")
        address = int(interface["data"][0])
        try:
            return self._engine.forward_device(address, list(shape))
        except ShapeError as exc:
            raise ShapeError(f"input of shape {shape}: {exc}") from None

    def to(self, device: str, backend: str | None = None) -> "Model | CudaModel":
        if device == "cuda" and backend in (None, self.backend):
            return self
        return self.model.to(device, backend)

    def output_shape(self, input_shape: Sequence[int] | None = None) -> tuple[int, ...]:
        return self.model.output_shape(input_shape)

    @property
    def layer_backends(self) -> dict[str, str]:
        """Weighted layer name -> ``"sparse"`` or ``"dense"``, as run on the device."""
        return dict(self._engine.layer_backends)

    @property
    def device_name(self) -> str:
        return self._engine.device

    def __repr__(self) -> str:
        return f"CudaModel(name={self.model.name!r}, layers={len(self.model.layers)}, backend={self.backend!r})"


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
