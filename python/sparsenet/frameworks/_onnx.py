"""ONNX graphs to sparsenet models.

ONNX uses sparsenet's layouts (NCHW, Conv weights (O, I, kh, kw)), so only
Gemm and MatMul weights need turning into (out, in). The graph must be a
chain: each node takes the previous node's output plus constants
(``initializer``, ``sparse_initializer`` or ``Constant`` nodes).
"""

from __future__ import annotations

import os
from math import prod
from typing import Any, Sequence

import numpy as np

from ..errors import FormatError
from ..layers import AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer, Linear, MaxPool2d, ReLU, Softmax
from ..model import Model
from ._common import fold_batchnorm, output_shape, require, same_padding, unique_name

SUPPORTED_OPS = ("Conv", "Gemm", "MatMul", "Add", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool",
                 "ReduceMean", "Flatten", "Reshape", "BatchNormalization", "Dropout", "Softmax", "Identity",
                 "Constant")
_MAX_SPARSE_ELEMENTS = 1 << 32


def sparse_tensor_to_array(sparse: Any, numpy_helper: Any, where: str) -> np.ndarray:
    """A dense array from a SparseTensorProto whose indices are linear ([nnz])
    or coordinates ([nnz, rank]), checking bounds and duplicates."""
    dims = tuple(int(d) for d in sparse.dims)
    where = f"{where} sparse_initializer '{sparse.values.name}'"
    if any(d < 0 for d in dims) or prod(dims) > _MAX_SPARSE_ELEMENTS:
        raise FormatError(f"{where}: dims {dims} are negative or absurdly large")
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices)
    if values.ndim != 1 or indices.dtype.kind not in "iu":
        raise FormatError(f"{where}: values must be 1-D and indices integers, got values {values.shape}, "
                          f"indices {indices.dtype}")
    indices = indices.astype(np.int64)
    size = prod(dims)
    if indices.shape == (values.size,):
        if indices.size and (indices.min() < 0 or indices.max() >= size):
            raise FormatError(f"{where}: a linear index lies outside dims {dims}")
        linear = indices
    elif indices.shape == (values.size, len(dims)):
        if indices.size and ((indices < 0).any() or (indices >= np.array(dims)).any()):
            raise FormatError(f"{where}: a coordinate lies outside dims {dims}")
        linear = np.ravel_multi_index(tuple(indices.T), dims) if indices.size else np.zeros(0, np.int64)
    else:
        raise FormatError(f"{where}: indices of shape {indices.shape} are neither [nnz] = [{values.size}] nor "
                          f"[nnz, rank] = [{values.size}, {len(dims)}]")
    if np.unique(linear).size != linear.size:
        raise FormatError(f"{where}: an index appears twice")
    dense = np.zeros(size, dtype=values.dtype)
    dense[linear] = values
    return dense.reshape(dims)


def _attributes(node: Any, helper: Any) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Converter:
    def __init__(self, path: str, onnx: Any, input_shape: tuple[int, ...], opset: int):
        self.path, self.onnx, self.input_shape, self.opset = path, onnx, input_shape, opset
        self.layers: list[Layer] = []
        self.names: set[str] = set()
        self.constants: dict[str, np.ndarray] = {}
        self.producer: dict[int, str] = {}  # id(layer) -> the tensor it writes, for folding
        self.current = ""
        self.batch: int | None = None  # the graph input's batch size, when fixed

    def shape(self) -> tuple[int, ...]:
        return output_shape(self.layers, self.input_shape)

    def where(self, node: Any) -> str:
        return f"{self.path}: ONNX node '{node.name or node.output[0]}' ({node.op_type})"

    def const(self, node: Any, index: int, what: str, required: bool = True) -> np.ndarray | None:
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            if required:
                raise FormatError(f"{self.where(node)}: missing input {what}")
            return None
        if name not in self.constants:
            raise FormatError(f"{self.where(node)}: input {what} '{name}' is not a constant (initializer); "
                              "sparsenet needs weights stored in the file")
        return self.constants[name]

    def add(self, node: Any, layer: Layer) -> None:
        self.layers.append(layer)
        self.producer[id(layer)] = node.output[0]

    def layer_name(self, node: Any) -> str:
        return unique_name(node.name or node.output[0], self.names)

    def last_weighted(self, node: Any, kind: type) -> Any:
        """layers[-1] when it is a ``kind`` whose output this node reads."""
        last = self.layers[-1] if self.layers else None
        if isinstance(last, kind) and self.producer.get(id(last)) == self.current:
            return last
        return None

    @staticmethod
    def auto_pad(attrs: dict) -> str:
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        return auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad

    def same(self, attrs: dict, stride: Sequence[int]) -> bool:
        """Whether the padding is 'SAME' resolved for this input size (the layer
        then refuses sizes that 'SAME' would pad otherwise): with stride 1 its
        total is kernel - 1 at every size, above 1 it depends on the size."""
        return self.auto_pad(attrs) in ("SAME_UPPER", "SAME_LOWER") and max(stride) > 1

    def pads(self, node: Any, attrs: dict, kernel: Sequence[int], stride: Sequence[int]) -> tuple[int, int]:
        auto_pad = self.auto_pad(attrs)
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            h, w = self.shape()[-2:]
            return (same_padding(h, kernel[0], stride[0], self.where(node)),
                    same_padding(w, kernel[1], stride[1], self.where(node)))
        if auto_pad == "VALID":
            return 0, 0
        if auto_pad != "NOTSET":
            raise FormatError(f"{self.where(node)}: auto_pad {auto_pad!r} is not supported")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
            raise FormatError(f"{self.where(node)}: pads {pads} are not symmetric (top=bottom, left=right); "
                              "sparsenet pads both sides alike")
        return pads[0], pads[1]

    def check_2d(self, node: Any, attrs: dict, kernel: Sequence[int]) -> None:
        if len(kernel) != 2:
            raise FormatError(f"{self.where(node)}: kernel {list(kernel)} is not 2-D")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise FormatError(f"{self.where(node)}: dilations {list(attrs['dilations'])} are not supported")

    # ------------------------------------------------------------------ ops
    def conv(self, node: Any, attrs: dict) -> None:
        weight = self.const(node, 1, "W")
        bias = self.const(node, 2, "B", required=False)
        if weight.ndim != 4:
            raise FormatError(f"{self.where(node)}: weight of shape {weight.shape} is not 4-D (O, I, kh, kw)")
        if attrs.get("group", 1) != 1:
            raise FormatError(f"{self.where(node)}: group={attrs['group']} (grouped/depthwise convolution) "
                              "is not supported")
        kernel = list(attrs.get("kernel_shape", weight.shape[2:]))
        if tuple(kernel) != weight.shape[2:]:
            raise FormatError(f"{self.where(node)}: kernel_shape {kernel} differs from the weight {weight.shape}")
        self.check_2d(node, attrs, kernel)
        stride = list(attrs.get("strides", [1, 1]))
        padding = self.pads(node, attrs, kernel, stride)
        self.add(node, Conv2d(weight.astype(np.float32), None if bias is None else bias.astype(np.float32),
                              stride=tuple(stride), padding=padding, name=self.layer_name(node),
                              same_padding=self.same(attrs, stride)))

    def batchnorm(self, node: Any, attrs: dict) -> None:
        conv = self.last_weighted(node, Conv2d)
        if conv is None:
            raise FormatError(f"{self.where(node)}: can only be folded into a Conv directly before it")
        if attrs.get("training_mode", 0):
            raise FormatError(f"{self.where(node)}: training_mode=1 cannot be folded")
        gamma, beta, mean, var = (self.const(node, i, what) for i, what in
                                  ((1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")))
        weight, bias = fold_batchnorm(conv.weight.to_dense(), conv.bias, gamma, beta, mean, var,
                                      attrs.get("epsilon", 1e-5), self.where(node))
        folded = conv.with_weights(weight, bias)
        self.layers[-1] = folded
        self.producer[id(folded)] = node.output[0]

    def gemm(self, node: Any, attrs: dict) -> None:
        if node.input[0] != self.current:
            raise FormatError(f"{self.where(node)}: input A must be the data (weights as B)")
        if attrs.get("transA", 0):
            raise FormatError(f"{self.where(node)}: transA=1 would transpose the batch; not supported")
        b = self.const(node, 1, "B")
        c = self.const(node, 2, "C", required=False)
        if b.ndim != 2:
            raise FormatError(f"{self.where(node)}: B of shape {b.shape} is not 2-D")
        weight = (b if attrs.get("transB", 0) else b.T).astype(np.float64) * attrs.get("alpha", 1.0)
        bias = None
        if c is not None:
            try:
                bias = np.broadcast_to(np.asarray(c, np.float64), (1, weight.shape[0])).reshape(-1) \
                    * attrs.get("beta", 1.0)
            except ValueError:
                raise FormatError(f"{self.where(node)}: C of shape {c.shape} does not broadcast to "
                                  f"(N, {weight.shape[0]})") from None
        self.add(node, Linear(weight.astype(np.float32), None if bias is None else bias.astype(np.float32),
                              name=self.layer_name(node)))

    def matmul(self, node: Any) -> None:
        if node.input[0] != self.current:
            raise FormatError(f"{self.where(node)}: the data must be the first input (x @ W)")
        b = self.const(node, 1, "B")
        if b.ndim != 2:
            raise FormatError(f"{self.where(node)}: B of shape {b.shape} is not 2-D (in, out)")
        self.add(node, Linear(np.ascontiguousarray(b.T, np.float32), None, name=self.layer_name(node)))

    def add_bias(self, node: Any) -> None:
        other = [i for i in node.input if i != self.current]
        last = self.last_weighted(node, (Linear, Conv2d))
        if len(other) != 1 or other[0] not in self.constants or last is None or last.bias is not None:
            raise FormatError(f"{self.where(node)}: only an Add of a constant bias to a MatMul or bias-free Conv "
                              "output is supported")
        rows = last.weight.rows
        c = self.constants[other[0]]
        shape = (1, rows) if isinstance(last, Linear) else (1, rows, 1, 1)
        try:
            fits = c.size == rows and np.broadcast_shapes(c.shape, shape) == shape
        except ValueError:  # shapes that do not broadcast at all
            fits = False
        if not fits:
            expected = f"({rows},) or (1, {rows})" if isinstance(last, Linear) else \
                f"({rows}, 1, 1) or (1, {rows}, 1, 1); a ({rows},) constant would broadcast over the width"
            raise FormatError(f"{self.where(node)}: adds a constant of shape {c.shape}, not one value per output "
                              f"of '{last.name}' ({rows}): expected shape {expected}")
        bias = c.reshape(-1).astype(np.float32)
        replaced = last.with_weights(last.weight, bias)
        self.layers[-1] = replaced
        self.producer[id(replaced)] = node.output[0]

    def pool(self, node: Any, attrs: dict) -> None:
        if len(node.output) > 1 and node.output[1]:
            raise FormatError(f"{self.where(node)}: the Indices output is not supported")
        kernel = list(attrs.get("kernel_shape", []))
        self.check_2d(node, attrs, kernel)
        if attrs.get("storage_order", 0):
            raise FormatError(f"{self.where(node)}: storage_order=1 is not supported")
        stride = list(attrs.get("strides", [1, 1]))
        padding = self.pads(node, attrs, kernel, stride)
        ceil = bool(attrs.get("ceil_mode", 0))
        name = self.layer_name(node)
        same = self.same(attrs, stride)
        if node.op_type == "MaxPool":
            self.add(node, MaxPool2d(tuple(kernel), tuple(stride), padding, ceil, name=name, same_padding=same))
        else:
            self.add(node, AvgPool2d(tuple(kernel), tuple(stride), padding, ceil,
                                     bool(attrs.get("count_include_pad", 0)), name=name, same_padding=same))

    def global_average(self, node: Any, keepdims: bool = True) -> None:
        shape = self.shape()
        if len(shape) != 3:
            raise FormatError(f"{self.where(node)}: needs a (C, H, W) map, gets {shape}")
        self.add(node, GlobalAvgPool2d(name=self.layer_name(node)))  # any map size, not just this one
        if not keepdims:
            self.add(node, Flatten(name=unique_name(f"{node.name or node.output[0]}.flatten", self.names)))

    def reduce_mean(self, node: Any, attrs: dict) -> None:
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node, 1, "axes").reshape(-1).tolist()
        if sorted(a % 4 for a in (axes or [])) != [2, 3] or len(self.shape()) != 3:
            raise FormatError(f"{self.where(node)}: only a mean over the spatial axes (2, 3) of an NCHW map "
                              f"is supported, got axes {axes}")
        self.global_average(node, keepdims=bool(attrs.get("keepdims", 1)))

    def flatten_to(self, node: Any, target: Sequence[int] | None) -> None:
        shape = self.shape()
        features = prod(shape)
        if target is not None:
            target = [int(d) for d in target]
            # (-1, F), or (B, -1 | F) with B = 0 (copy the batch) or the graph's own
            # fixed batch size: the batch kept, everything else flattened. Another
            # B would fold samples together: (2, 2, 2, 2) to (4, -1) is (4, 4).
            ok = len(target) == 2 and (target[1] == features if target[0] == -1 else
                                       target[0] in (0, self.batch) and target[1] in (-1, features))
            if not ok:
                batch = "" if self.batch is None else f" (the graph's batch is {self.batch})"
                raise FormatError(f"{self.where(node)}: reshape of a {shape} sample to {target} is not a flatten to "
                                  f"(batch, features){batch}")
        if len(shape) == 3:
            self.add(node, Flatten(name=self.layer_name(node)))

    def softmax(self, node: Any, attrs: dict) -> None:
        axis = attrs.get("axis", -1 if self.opset >= 13 else 1)
        if len(self.shape()) != 1 or axis not in (1, -1):
            raise FormatError(f"{self.where(node)}: softmax over axis {axis} of a {len(self.shape()) + 1}-D "
                              "tensor; sparsenet's Softmax runs over the features of (N, F)")
        self.add(node, Softmax(name=self.layer_name(node)))

    def node(self, node: Any) -> None:
        helper = self.onnx.helper
        attrs = _attributes(node, helper)
        op = node.op_type
        if node.domain not in ("", "ai.onnx") or op not in SUPPORTED_OPS:
            raise FormatError(f"{self.where(node)}: operator {node.domain + '.' if node.domain else ''}{op} is "
                              f"not supported; supported: {', '.join(SUPPORTED_OPS)}")
        if op == "Constant":
            self.constants[node.output[0]] = self.onnx.numpy_helper.to_array(attrs["value"]) if "value" in attrs \
                else np.asarray(next(iter(attrs.values())))
            return
        data = [i for i in node.input if i and i not in self.constants]
        if data != [self.current]:
            raise FormatError(f"{self.where(node)}: takes {list(node.input)}, not the previous node's output "
                              f"'{self.current}' and constants: sparsenet runs sequential chains only")
        if op == "Conv":
            self.conv(node, attrs)
        elif op == "BatchNormalization":
            self.batchnorm(node, attrs)
        elif op == "Gemm":
            self.gemm(node, attrs)
        elif op == "MatMul":
            self.matmul(node)
        elif op == "Add":
            self.add_bias(node)
        elif op == "Relu":
            self.add(node, ReLU(name=self.layer_name(node)))
        elif op in ("MaxPool", "AveragePool"):
            self.pool(node, attrs)
        elif op == "GlobalAveragePool":
            self.global_average(node)
        elif op == "ReduceMean":
            self.reduce_mean(node, attrs)
        elif op == "Flatten":
            if attrs.get("axis", 1) != 1:
                raise FormatError(f"{self.where(node)}: axis={attrs['axis']}; only axis=1 is supported")
            self.flatten_to(node, None)
        elif op == "Reshape":
            self.flatten_to(node, self.const(node, 1, "shape").reshape(-1))
        elif op == "Dropout":
            training = self.const(node, 2, "training_mode", required=False)
            if training is not None and bool(training):
                raise FormatError(f"{self.where(node)}: training_mode is true")
            ratio = self.const(node, 1, "ratio", required=False)
            p = float(ratio) if ratio is not None else attrs.get("ratio", 0.5)
            self.add(node, Dropout(p, name=self.layer_name(node)))
        elif op == "Softmax":
            self.softmax(node, attrs)
        # Identity: nothing to add
        self.current = node.output[0]


def _load(path: str, onnx: Any) -> Any:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return onnx.load(path)
    except Exception as exc:  # protobuf DecodeError, external-data errors, ...
        raise FormatError(f"{path}: not a readable ONNX model: {type(exc).__name__}: {exc}") from None


def from_onnx(path: str | os.PathLike, backend: str = "auto", input_shape: Sequence[int] | None = None,
              name: str | None = None) -> Model:
    onnx = require("onnx", "onnx")
    import onnx.numpy_helper  # noqa: F401  (a submodule, imported for its side effect on onnx)

    path = os.fspath(path)
    model = _load(path, onnx)
    graph = model.graph
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13)
    constants: dict[str, np.ndarray] = {}
    for tensor in graph.initializer:
        try:
            constants[tensor.name] = onnx.numpy_helper.to_array(tensor)
        except Exception as exc:
            raise FormatError(f"{path}: initializer '{tensor.name}' cannot be read: {exc}") from None
    for sparse in graph.sparse_initializer:
        try:
            constants[sparse.values.name] = sparse_tensor_to_array(sparse, onnx.numpy_helper, path)
        except FormatError:
            raise
        except Exception as exc:
            raise FormatError(f"{path}: sparse_initializer '{sparse.values.name}' cannot be read: {exc}") from None
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise FormatError(f"{path}: the graph has {len(inputs)} data inputs ({[i.name for i in inputs]}); "
                          "sparsenet runs one")
    dims = inputs[0].type.tensor_type.shape.dim
    declared = [d.dim_value if d.HasField("dim_value") else None for d in dims][1:]
    if input_shape is None:
        if not declared or any(d is None or d <= 0 for d in declared):
            raise FormatError(f"{path}: input '{inputs[0].name}' has no fixed per-sample shape ({declared}); "
                              "pass input_shape")
        input_shape = declared
    converter = _Converter(path, onnx, tuple(int(d) for d in input_shape), opset)
    converter.constants = constants
    converter.current = inputs[0].name
    if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
        converter.batch = int(dims[0].dim_value)
    for node in graph.node:
        converter.node(node)
    outputs = [o.name for o in graph.output]
    if outputs != [converter.current]:
        raise FormatError(f"{path}: graph outputs {outputs} are not the last node's output '{converter.current}'")
    if not converter.layers:
        raise FormatError(f"{path}: the graph has no layers")
    return Model(converter.layers, backend=backend, input_shape=converter.input_shape,
                 name=name or graph.name or os.path.splitext(os.path.basename(path))[0])
