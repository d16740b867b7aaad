"""Keras ``.keras`` archives and ``.h5`` files to sparsenet models, read with
h5py alone (no TensorFlow, no Keras).

Keras works channels-last: activations (N, H, W, C), Conv2D kernels
(kh, kw, in, out), Dense kernels (in, out), and Flatten emits (H, W, C)
order. sparsenet works channels-first, so kernels are transposed to
(out, in, kh, kw) and (out, in), the model takes NCHW input, and the columns
of the first Dense after a Flatten are permuted from (H, W, C) to (C, H, W)
order, which gives the same outputs.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import FormatError
from ..layers import AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer, Linear, MaxPool2d, ReLU, Softmax
from ..model import Model
from ._common import output_shape, require, same_padding, unique_name

# The layers whose data_format is the layout of the maps they read and write
# (Flatten's says how it orders its output; the others have none).
_MAP_LAYERS = ("Conv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D")
SUPPORTED_LAYERS = ("InputLayer", "Conv2D", "Dense", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
                    "Flatten", "Dropout", "Activation", "ReLU", "Softmax")
_ACTIVATIONS = ("relu", "softmax", "linear")


def _snake_case(name: str) -> str:
    """Keras's own ``to_snake_case``: how a .keras archive names a layer's weights."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _inbound_names(value: Any) -> Iterator[str]:
    """Layer names in a functional config's ``inbound_nodes``, in both the
    Keras 3 (``keras_history``) and the tf.keras ``[name, node, tensor, {}]`` forms."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _inbound_names(item)
    elif isinstance(value, list):
        if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int) and isinstance(value[2], int):
            yield value[0]
        else:
            for item in value:
                yield from _inbound_names(item)


class _Weights:
    """Weight arrays per layer, from either file layout."""

    def __init__(self, path: str, h5: Any, archive: bool):
        self.path, self.h5, self.archive = path, h5, archive
        self.counts: dict[str, int] = {}

    def register(self, config: dict) -> str:
        """Keras 3 archives name weights by class, numbered in layer order."""
        base = _snake_case(config["class_name"])
        count = self.counts.get(base)
        self.counts[base] = 0 if count is None else count + 1
        return base if count is None else f"{base}_{count + 1}"

    def arrays(self, layer_name: str, archive_name: str, where: str) -> list[np.ndarray]:
        try:
            if self.archive:
                group = self.h5.get(f"layers/{archive_name}/vars")
                if group is None:
                    raise FormatError(f"{self.path}: {where}: no weights under 'layers/{archive_name}/vars' in "
                                      "model.weights.h5")
                return [np.asarray(group[str(i)]) for i in range(len(group))]
            root = self.h5["model_weights"] if "model_weights" in self.h5 else self.h5
            group = root.get(layer_name)
            if group is None:
                raise FormatError(f"{self.path}: {where}: no weight group 'model_weights/{layer_name}'")
            return [np.asarray(group[_text(n)]) for n in group.attrs.get("weight_names", [])]
        except FormatError:
            raise
        except (KeyError, OSError, ValueError, TypeError) as exc:
            raise FormatError(f"{self.path}: {where}: weights cannot be read: {exc}") from None


def _open(path: str, h5py: Any) -> tuple[dict, Any, bool]:
    """(model config, open h5 file of weights, whether it is a Keras 3 archive)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
                weights = io.BytesIO(archive.read("model.weights.h5"))
        except KeyError as exc:
            raise FormatError(f"{path}: a .keras archive needs config.json and model.weights.h5 ({exc})") from None
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise FormatError(f"{path}: not a readable .keras archive: {exc}") from None
        try:
            return config, h5py.File(weights, "r"), True
        except OSError as exc:
            raise FormatError(f"{path}: model.weights.h5 is not a readable HDF5 file: {exc}") from None
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"{path}: neither a .keras archive nor a readable HDF5 file: {exc}") from None
    raw = h5.attrs.get("model_config")
    if raw is None:
        h5.close()
        raise FormatError(f"{path}: the HDF5 file has no 'model_config' (saved with save_weights?); "
                          "save the whole model with model.save(...)")
    try:
        config = json.loads(_text(raw))
    except ValueError as exc:
        h5.close()
        raise FormatError(f"{path}: model_config is not valid JSON: {exc}") from None
    return config, h5, False


def _chain(path: str, config: dict) -> tuple[list[dict], list | None]:
    """The model's layers in order (InputLayer excluded) and the batch input shape."""
    kind = config.get("class_name")
    body = config.get("config", {})
    layers = body if isinstance(body, list) else body.get("layers")
    if kind not in ("Sequential", "Functional", "Model") or not isinstance(layers, list):
        raise FormatError(f"{path}: model class {kind!r} is not a Sequential or functional model")
    batch_shape = None
    for layer in layers:
        cfg = layer.get("config", {})
        shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        if shape is not None:
            batch_shape = shape
            break
    if batch_shape is None and isinstance(body, dict):
        batch_shape = body.get("build_input_shape")
    if kind == "Sequential":
        return [l for l in layers if l.get("class_name") != "InputLayer"], batch_shape
    previous = None
    chain = []
    for layer in layers:
        name = layer.get("name") or layer.get("config", {}).get("name")
        if layer.get("class_name") == "InputLayer":
            if previous is not None:
                raise FormatError(f"{path}: the model has several inputs; sparsenet runs one")
            previous = name
            continue
        inbound = sorted(set(_inbound_names(layer.get("inbound_nodes", []))))
        if inbound != [previous]:
            raise FormatError(f"{path}: layer '{name}' takes its input from {inbound}, not from the layer before "
                              f"it ('{previous}'): sparsenet runs sequential chains only")
        chain.append(layer)
        previous = name
    outputs = sorted(set(_inbound_names(body.get("output_layers", []))))
    if outputs != [previous]:
        raise FormatError(f"{path}: the model's outputs {outputs} are not its last layer '{previous}'")
    return chain, batch_shape


def _activation(value: Any) -> str:
    if isinstance(value, dict):  # Keras 3 may serialise it as {"class_name": "function", "config": "relu"}
        value = value.get("config", value.get("class_name"))
        value = value.get("name", value) if isinstance(value, dict) else value
    return "linear" if value is None else str(value)


class _Converter:
    def __init__(self, path: str, weights: _Weights, input_shape: tuple[int, ...], channels_last: bool):
        self.path, self.weights, self.input_shape = path, weights, input_shape
        self.channels_last = channels_last
        self.layers: list[Layer] = []
        self.names: set[str] = set()
        self.flattened_from: tuple[int, int, int] | None = None  # a (C, H, W) map flattened in H, W, C order

    def shape(self) -> tuple[int, ...]:
        return output_shape(self.layers, self.input_shape)

    def add(self, layer: Layer) -> None:
        self.layers.append(layer)

    def activation(self, name: str, value: Any, where: str) -> None:
        activation = _activation(value)
        if activation == "relu":
            self.add(ReLU(name=unique_name(f"{name}.relu", self.names)))
        elif activation == "softmax":
            self.softmax(unique_name(f"{name}.softmax", self.names), -1, where)
        elif activation != "linear":
            raise FormatError(f"{where}: activation {activation!r} is not supported (only {', '.join(_ACTIVATIONS)})")

    def softmax(self, name: str, axis: Any, where: str) -> None:
        if len(self.shape()) != 1 or axis not in (-1, 1, [-1], [1]):
            raise FormatError(f"{where}: softmax over axis {axis} of a {len(self.shape()) + 1}-D tensor; sparsenet's "
                              "Softmax runs over the features of (N, F)")
        self.add(Softmax(name=name))

    @staticmethod
    def size_bound(cfg: dict, stride: Sequence[int]) -> bool:
        """Whether padding="same" was resolved for this input size: with stride 1
        its total is kernel - 1 at every size, above 1 it depends on the size."""
        return cfg.get("padding") == "same" and max(stride) > 1

    def padding(self, cfg: dict, kernel: Sequence[int], stride: Sequence[int], where: str) -> tuple[int, int]:
        mode = cfg.get("padding", "valid")
        if mode == "valid":
            return 0, 0
        if mode != "same":
            raise FormatError(f"{where}: padding {mode!r} is not supported")
        h, w = self.shape()[-2:]
        return same_padding(h, kernel[0], stride[0], where), same_padding(w, kernel[1], stride[1], where)

    def weighted(self, layer: dict, archive_name: str, where: str) -> tuple[np.ndarray, np.ndarray | None]:
        cfg = layer["config"]
        arrays = self.weights.arrays(cfg["name"], archive_name, where)
        expected = 2 if cfg.get("use_bias", True) else 1
        if len(arrays) != expected:
            raise FormatError(f"{self.path}: {where}: {len(arrays)} weight arrays, expected {expected} "
                              "(kernel and bias)")
        kernel = arrays[0]
        if kernel.dtype.kind != "f" or (expected == 2 and arrays[1].dtype.kind != "f"):
            raise FormatError(f"{self.path}: {where}: weights are not floating point")
        return kernel, arrays[1] if expected == 2 else None

    def layer(self, layer: dict, archive_name: str) -> None:
        kind = layer.get("class_name")
        cfg = layer.get("config", {})
        name = unique_name(cfg.get("name", kind), self.names)
        where = f"Keras layer '{cfg.get('name')}' ({kind})"
        if kind in _MAP_LAYERS and (cfg.get("data_format") or "channels_last") != (
                "channels_last" if self.channels_last else "channels_first"):
            raise FormatError(f"{self.path}: {where}: mixes data formats")
        if kind == "Conv2D":
            kernel, bias = self.weighted(layer, archive_name, where)
            if kernel.ndim != 4:
                raise FormatError(f"{self.path}: {where}: kernel of shape {kernel.shape} is not (kh, kw, in, out)")
            if any(d != 1 for d in cfg.get("dilation_rate", [1, 1])) or cfg.get("groups", 1) != 1:
                raise FormatError(f"{self.path}: {where}: dilation and groups are not supported")
            stride = tuple(cfg.get("strides", (1, 1)))
            padding = self.padding(cfg, kernel.shape[:2], stride, f"{self.path}: {where}")
            self.add(Conv2d(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)), bias, stride=stride,
                            padding=padding, name=name, same_padding=self.size_bound(cfg, stride)))
            self.activation(name, cfg.get("activation"), f"{self.path}: {where}")
        elif kind == "Dense":
            kernel, bias = self.weighted(layer, archive_name, where)
            if kernel.ndim != 2:
                raise FormatError(f"{self.path}: {where}: kernel of shape {kernel.shape} is not (in, out)")
            weight = kernel.T
            if self.flattened_from is not None:
                c, h, w = self.flattened_from
                if weight.shape[1] != c * h * w:
                    raise FormatError(f"{self.path}: {where}: kernel {kernel.shape} does not take the {h}x{w}x{c} "
                                      "flattened map before it")
                # column (c, h, w) of sparsenet's input is Keras's column (h, w, c)
                weight = weight[:, np.arange(c * h * w).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)]
                self.flattened_from = None
            self.add(Linear(np.ascontiguousarray(weight), bias, name=name))
            self.activation(name, cfg.get("activation"), f"{self.path}: {where}")
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            pool = tuple(cfg.get("pool_size", (2, 2)))
            stride = tuple(cfg.get("strides") or pool)
            padding = self.padding(cfg, pool, stride, f"{self.path}: {where}")
            same = self.size_bound(cfg, stride)
            if kind == "MaxPooling2D":
                self.add(MaxPool2d(pool, stride, padding, name=name, same_padding=same))
            else:  # Keras averages over the valid cells only
                self.add(AvgPool2d(pool, stride, padding, count_include_pad=False, name=name, same_padding=same))
        elif kind == "GlobalAveragePooling2D":  # (N, C) unless keepdims; any map size
            self.add(GlobalAvgPool2d(name=name))
            if not cfg.get("keepdims", False):
                self.add(Flatten(name=unique_name(f"{name}.flatten", self.names)))
        elif kind == "Flatten":
            shape = self.shape()
            if len(shape) == 3:
                # Keras flattens in memory order, after moving channels last when the
                # Flatten itself says channels_first: (H, W, C) order unless a
                # channels_first map meets a channels_last (default) Flatten.
                flatten_first = cfg.get("data_format") == "channels_first"
                if self.channels_last and flatten_first:
                    raise FormatError(f"{self.path}: {where}: a channels_first Flatten of a channels_last map is "
                                      "not supported")
                self.add(Flatten(name=name))
                if (self.channels_last or flatten_first) and shape[0] > 1 and shape[1] * shape[2] > 1:
                    self.flattened_from = shape
        elif kind == "Dropout":
            self.add(Dropout(cfg.get("rate", 0.5), name=name))
        elif kind == "Activation":
            self.activation(name, cfg.get("activation"), f"{self.path}: {where}")
        elif kind == "ReLU":
            if cfg.get("max_value") is not None or cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
                raise FormatError(f"{self.path}: {where}: only the plain ReLU is supported")
            self.add(ReLU(name=name))
        elif kind == "Softmax":
            self.softmax(name, cfg.get("axis", -1), f"{self.path}: {where}")
        else:
            raise FormatError(f"{self.path}: {where} is not supported; supported layers: {', '.join(SUPPORTED_LAYERS)}")


def from_keras(path: str | os.PathLike, backend: str = "auto", input_shape: Sequence[int] | None = None,
               name: str | None = None) -> Model:
    h5py = require("h5py", "keras")
    path = os.fspath(path)
    config, h5, archive = _open(path, h5py)
    try:
        chain, batch_shape = _chain(path, config)
        formats = {l.get("config", {}).get("data_format") or "channels_last" for l in chain
                   if l.get("class_name") in _MAP_LAYERS}
        if len(formats) > 1:
            raise FormatError(f"{path}: layers mix data formats {sorted(formats)}")
        channels_last = formats != {"channels_first"}
        if input_shape is None:
            if batch_shape is None or any(d is None for d in batch_shape[1:]):
                raise FormatError(f"{path}: the model records no fixed input shape ({batch_shape}); pass input_shape")
            sample = tuple(int(d) for d in batch_shape[1:])
            input_shape = (sample[2], sample[0], sample[1]) if len(sample) == 3 and channels_last else sample
        weights = _Weights(path, h5, archive)
        converter = _Converter(path, weights, tuple(int(d) for d in input_shape), channels_last)
        for layer in chain:
            converter.layer(layer, weights.register(layer))
        if converter.flattened_from is not None:
            raise FormatError(f"{path}: a Flatten in (H, W, C) order is not followed by a Dense; sparsenet's "
                              "(C, H, W) order would differ from Keras's (H, W, C) output")
        if not converter.layers:
            raise FormatError(f"{path}: the model has no layers")
        model_name = name or (config.get("config", {}).get("name") if isinstance(config.get("config"), dict) else None)
        return Model(converter.layers, backend=backend, input_shape=converter.input_shape, name=model_name)
    finally:
        h5.close()
