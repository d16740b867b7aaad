"""Peer engines timed beside sparsenet on the same weights: scipy.sparse CSR,
torch (dense F.linear / F.conv2d / whole nets, and torch.sparse_csr matmul),
onnxruntime (dense Gemm / Conv / whole-net graphs built with the onnx helper
API) and MKL's sparse inspector-executor (through sparse_dot_mkl's MKL library).

Every peer is optional: ``available(engine)`` says whether its package imports.
Each peer gets a ``PeerRunner`` whose ``forward(x)`` takes and returns NumPy
arrays like ``sparsenet.Model.forward`` (batch-first, float32), so the timing
loop and the accounting are those of the sparsenet cases.

Thread counts: torch.set_num_threads, SessionOptions.intra_op_num_threads,
mkl_set_num_threads; scipy.sparse is single-threaded. Engines with spinning
thread pools disturb each other in one process: ``run_peers.py`` runs one engine
and thread count per process.
"""

from __future__ import annotations

import ctypes
import importlib.util
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

import sparsenet

# engine -> (what it is, the module it needs, layer kinds it runs)
ENGINES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "scipy": ("scipy.sparse csr_matrix @ x (single-threaded)", "scipy", ("fc",)),
    "torch": ("torch dense: F.linear, F.conv2d, whole nets", "torch", ("fc", "conv", "model")),
    "torch-csr": ("torch.sparse_csr_tensor @ x", "torch", ("fc",)),
    "onnxruntime": ("onnxruntime CPU, dense Gemm / Conv / whole-net graphs", "onnxruntime", ("fc", "conv", "model")),
    "mkl": ("MKL sparse inspector-executor (mkl_sparse_s_mv / _mm, handle optimized once)", "sparse_dot_mkl",
            ("fc",)),
}
# Which peers store the weights sparse (for the bytes-moved accounting).
SPARSE_ENGINES = ("scipy", "torch-csr", "mkl")


def available(engine: str) -> bool:
    module = ENGINES[engine][1]
    if importlib.util.find_spec(module) is None:
        return False
    if engine == "onnxruntime":
        return importlib.util.find_spec("onnx") is not None
    return True


def runs(engine: str, kind: str) -> bool:
    return kind in ENGINES[engine][2]


def parse_engines(text: str | None) -> list[str]:
    """``--peers`` value: comma-separated engines, or ``all`` (every installed one)."""
    if not text:
        return []
    names = [t.strip() for t in text.split(",") if t.strip()]
    if "all" in names:
        return [e for e in ENGINES if available(e)]
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise ValueError(f"unknown peer engine(s) {', '.join(unknown)}; known: {', '.join(ENGINES)}, all")
    return names


def engine_version(engine: str) -> str:
    try:
        if engine == "scipy":
            import scipy
            return scipy.__version__
        if engine in ("torch", "torch-csr"):
            import torch
            return torch.__version__
        if engine == "onnxruntime":
            import onnxruntime
            return onnxruntime.__version__
        if engine == "mkl":
            import sparse_dot_mkl
            return sparse_dot_mkl.mkl_get_version_string().strip()
    except Exception as exc:  # pragma: no cover - reported, not fatal
        return f"unknown ({exc})"
    return "?"


def set_threads(engine: str, threads: int) -> None:
    if engine in ("torch", "torch-csr"):
        import torch
        torch.set_num_threads(threads)
    elif engine == "mkl":
        import sparse_dot_mkl
        sparse_dot_mkl.mkl_set_num_threads(threads)
    # onnxruntime: per session (SessionOptions); scipy: single-threaded.


# --------------------------------------------------------------- descriptions
@dataclass
class Op:
    """One step of a network, engine-neutral: what every peer builds from."""

    kind: str                              # linear, conv2d, relu, maxpool2d, avgpool2d, flatten, softmax, identity
    weight: Any = None                     # sparsenet.SparseWeight
    bias: np.ndarray | None = None
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    kernel: tuple = (1, 1)
    ceil_mode: bool = False


def ops_of(model: sparsenet.Model) -> list[Op]:
    ops = []
    for layer in model.layers:
        if isinstance(layer, sparsenet.Linear):
            ops.append(Op("linear", layer.weight, layer.bias))
        elif isinstance(layer, sparsenet.Conv2d):
            ops.append(Op("conv2d", layer.weight, layer.bias, stride=layer.stride, padding=layer.padding))
        elif isinstance(layer, sparsenet.MaxPool2d):
            if layer.padding != (0, 0):
                raise NotImplementedError("padded pooling in a peer graph")
            ops.append(Op("maxpool2d", kernel=layer.kernel_size, stride=layer.stride, ceil_mode=layer.ceil_mode))
        elif isinstance(layer, sparsenet.ReLU):
            ops.append(Op("relu"))
        elif isinstance(layer, sparsenet.Flatten):
            ops.append(Op("flatten"))
        elif isinstance(layer, sparsenet.Dropout):
            continue  # inference: identity
        elif isinstance(layer, sparsenet.Softmax):
            ops.append(Op("softmax"))
        else:
            raise NotImplementedError(f"peer graphs do not know layer {type(layer).__name__}")
    return ops


def dense_of(weight: Any) -> np.ndarray:
    return np.ascontiguousarray(weight.to_dense(), dtype=np.float32)


def scipy_csr_of(weight: Any):
    import scipy.sparse
    return scipy.sparse.csr_matrix((weight.data, weight.indices.astype(np.int32), weight.indptr.astype(np.int32)),
                                   shape=(weight.rows, weight.cols))


# ---------------------------------------------------------------------- runners
class PeerRunner:
    """``forward(x)``: NumPy batch in, NumPy batch out."""

    def __init__(self, engine: str, forward: Callable[[np.ndarray], Any], keep: Any = None):
        self.engine = engine
        self.forward = forward
        self._keep = keep  # objects the forward closure relies on (MKL handles, sessions)


def build(engine: str, ops: Sequence[Op], sample_shape: Sequence[int], threads: int) -> PeerRunner:
    if engine == "scipy":
        return _scipy_runner(ops)
    if engine == "torch":
        return _torch_runner(ops)
    if engine == "torch-csr":
        return _torch_csr_runner(ops)
    if engine == "onnxruntime":
        return _onnxruntime_runner(ops, sample_shape, threads)
    if engine == "mkl":
        return _mkl_runner(ops)
    raise ValueError(engine)


def _single_linear(ops: Sequence[Op], engine: str) -> Op:
    if len(ops) != 1 or ops[0].kind != "linear":
        raise NotImplementedError(f"{engine} peer runs single fully connected layers only")
    return ops[0]


def _scipy_runner(ops: Sequence[Op]) -> PeerRunner:
    op = _single_linear(ops, "scipy")
    w, b = scipy_csr_of(op.weight), op.bias

    def forward(x: np.ndarray) -> np.ndarray:
        if x.shape[0] == 1:
            y = (w @ x[0])[None, :]  # csr_matvec
        else:
            y = (w @ x.T).T          # csr_matvecs on the transposed view
        return y + b if b is not None else y

    return PeerRunner("scipy", forward, w)


def _torch_runner(ops: Sequence[Op]) -> PeerRunner:
    import torch
    import torch.nn.functional as F

    steps: list[Callable] = []
    for op in ops:
        if op.kind in ("linear", "conv2d"):
            w = torch.from_numpy(dense_of(op.weight).reshape(op.weight.shape))
            b = None if op.bias is None else torch.from_numpy(op.bias.copy())  # a built layer's bias is read-only
            if op.kind == "linear":
                steps.append(lambda t, w=w, b=b: F.linear(t, w, b))
            else:
                steps.append(lambda t, w=w, b=b, op=op: F.conv2d(t, w, b, stride=op.stride, padding=op.padding))
        elif op.kind == "relu":
            steps.append(F.relu)
        elif op.kind == "maxpool2d":
            steps.append(lambda t, op=op: F.max_pool2d(t, op.kernel, op.stride, ceil_mode=op.ceil_mode))
        elif op.kind == "flatten":
            steps.append(lambda t: torch.flatten(t, 1))
        elif op.kind == "softmax":
            steps.append(lambda t: torch.softmax(t, 1))

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(x)
            for step in steps:
                t = step(t)
            return t.numpy()

    return PeerRunner("torch", forward)


def _torch_csr_runner(ops: Sequence[Op]) -> PeerRunner:
    import torch

    op = _single_linear(ops, "torch-csr")
    weight = op.weight
    with warnings.catch_warnings():  # "CSR support is in beta": pytest's filterwarnings=error would fail the case
        warnings.simplefilter("ignore", UserWarning)
        w = torch.sparse_csr_tensor(torch.from_numpy(weight.indptr.astype(np.int64)),
                                    torch.from_numpy(weight.indices.astype(np.int64)),
                                    torch.from_numpy(weight.data.copy()), size=(weight.rows, weight.cols),
                                    check_invariants=False)
    b = None if op.bias is None else torch.from_numpy(op.bias.copy())

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y = (w @ torch.from_numpy(x).T).T  # (out, batch) -> (batch, out)
            if b is not None:
                y = y + b
            return y.numpy()

    return PeerRunner("torch-csr", forward, w)


def onnx_graph(ops: Sequence[Op], sample_shape: Sequence[int]):
    """An ONNX model (opset 17) of ``ops`` with dense weights as initializers;
    batch is a symbolic dimension."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    current = "input"
    for i, op in enumerate(ops):
        out = f"t{i}"
        if op.kind == "linear":
            inits.append(numpy_helper.from_array(dense_of(op.weight), f"w{i}"))
            inputs = [current, f"w{i}"]
            if op.bias is not None:
                inits.append(numpy_helper.from_array(op.bias, f"b{i}"))
                inputs.append(f"b{i}")
            nodes.append(helper.make_node("Gemm", inputs, [out], transB=1))
        elif op.kind == "conv2d":
            inits.append(numpy_helper.from_array(dense_of(op.weight).reshape(op.weight.shape), f"w{i}"))
            inputs = [current, f"w{i}"]
            if op.bias is not None:
                inits.append(numpy_helper.from_array(op.bias, f"b{i}"))
                inputs.append(f"b{i}")
            kh, kw = op.weight.shape[2:]
            ph, pw = op.padding
            nodes.append(helper.make_node("Conv", inputs, [out], kernel_shape=[kh, kw], strides=list(op.stride),
                                          pads=[ph, pw, ph, pw]))
        elif op.kind == "relu":
            nodes.append(helper.make_node("Relu", [current], [out]))
        elif op.kind == "maxpool2d":
            nodes.append(helper.make_node("MaxPool", [current], [out], kernel_shape=list(op.kernel),
                                          strides=list(op.stride), ceil_mode=int(op.ceil_mode)))
        elif op.kind == "flatten":
            nodes.append(helper.make_node("Flatten", [current], [out], axis=1))
        elif op.kind == "softmax":
            nodes.append(helper.make_node("Softmax", [current], [out], axis=1))
        else:
            continue
        current = out
    nodes[-1].output[0] = "output"
    graph = helper.make_graph(
        nodes, "sparsenet_peer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *sample_shape])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 8)
    return model


def _onnxruntime_runner(ops: Sequence[Op], sample_shape: Sequence[int], threads: int) -> PeerRunner:
    import onnxruntime as ort

    model = onnx_graph(ops, sample_shape)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del model
    run = session.run

    def forward(x: np.ndarray) -> np.ndarray:
        return run(["output"], {"input": x})[0]

    return PeerRunner("onnxruntime", forward, session)


# ------------------------------------------------------------------------- MKL
_SPARSE_OPERATION_NON_TRANSPOSE = 10
_SPARSE_MATRIX_TYPE_GENERAL = 20
_SPARSE_INDEX_BASE_ZERO = 0
_SPARSE_LAYOUT_COLUMN_MAJOR = 102


class MklCsr:
    """An MKL sparse handle over a CSR weight, hinted and optimized once
    (inspector-executor), then ``mv``/``mm`` per call; LP64 (int32) indices.

    y (batch, out) = x (batch, in) @ W.T is computed as the column-major product
    Y (out x batch) = W (out x in) @ X (in x batch): a row-major (batch, in)
    array *is* column-major X with ld = in, so nothing is copied.
    """

    def __init__(self, weight: Any, expected_calls: int = 100000, batch_hint: int | None = None):
        from sparse_dot_mkl._mkl_interface import _cfunctions as cf
        from sparse_dot_mkl._mkl_interface._structs import matrix_descr, sparse_matrix_t

        if cf.MKL.MKL_INT is None:  # sparse_dot_mkl sets these up lazily
            import sparse_dot_mkl._mkl_interface._common  # noqa: F401
        # Our own CDLL object over the library sparse_dot_mkl found: its function
        # objects carry no argtypes, so the raw pointers below pass as they are.
        self._lib = lib = ctypes.CDLL(cf._libmkl._name)
        self.rows, self.cols = weight.rows, weight.cols
        self._indptr = np.ascontiguousarray(weight.indptr, dtype=np.int32)
        self._indices = np.ascontiguousarray(weight.indices, dtype=np.int32)
        self._data = np.ascontiguousarray(weight.data, dtype=np.float32)
        self.handle = sparse_matrix_t()
        self.descr = matrix_descr(_SPARSE_MATRIX_TYPE_GENERAL, 0, 0)
        ptr = lambda a, t: a.ctypes.data_as(ctypes.POINTER(t))  # noqa: E731
        self._check("mkl_sparse_s_create_csr", lib.mkl_sparse_s_create_csr(
            ctypes.byref(self.handle), ctypes.c_int(_SPARSE_INDEX_BASE_ZERO), ctypes.c_int(self.rows),
            ctypes.c_int(self.cols), ptr(self._indptr, ctypes.c_int), ptr(self._indptr[1:], ctypes.c_int),
            ptr(self._indices, ctypes.c_int), ptr(self._data, ctypes.c_float)))
        op = ctypes.c_int(_SPARSE_OPERATION_NON_TRANSPOSE)
        if batch_hint is None or batch_hint == 1:
            self._check("mkl_sparse_set_mv_hint",
                        lib.mkl_sparse_set_mv_hint(self.handle, op, self.descr, ctypes.c_int(expected_calls)))
        if batch_hint is None or batch_hint > 1:
            self._check("mkl_sparse_set_mm_hint", lib.mkl_sparse_set_mm_hint(
                self.handle, op, self.descr, ctypes.c_int(_SPARSE_LAYOUT_COLUMN_MAJOR),
                ctypes.c_int(batch_hint or 64), ctypes.c_int(expected_calls)))
        self._check("mkl_sparse_optimize", lib.mkl_sparse_optimize(self.handle))
        self._mv, self._mm = lib.mkl_sparse_s_mv, lib.mkl_sparse_s_mm

    @staticmethod
    def _check(what: str, status: int) -> None:
        # SPARSE_STATUS_NOT_SUPPORTED (6) for a hint is not an error: MKL just ignores it.
        if status not in (0, 6):
            raise RuntimeError(f"{what} failed with sparse_status_t {status}")

    def matmul(self, x: np.ndarray) -> np.ndarray:
        """(batch, in) float32 C-contiguous -> (batch, out)."""
        batch = x.shape[0]
        y = np.empty((batch, self.rows), dtype=np.float32)
        xp, yp = ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(y.ctypes.data)
        op = ctypes.c_int(_SPARSE_OPERATION_NON_TRANSPOSE)
        if batch == 1:
            status = self._mv(op, ctypes.c_float(1.0), self.handle, self.descr, xp, ctypes.c_float(0.0), yp)
        else:
            status = self._mm(op, ctypes.c_float(1.0), self.handle, self.descr,
                              ctypes.c_int(_SPARSE_LAYOUT_COLUMN_MAJOR), xp, ctypes.c_int(batch),
                              ctypes.c_int(self.cols), ctypes.c_float(0.0), yp, ctypes.c_int(self.rows))
        self._check("mkl_sparse_s_mv/mm", status)
        return y

    def __del__(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is not None and self.handle:
            lib.mkl_sparse_destroy(self.handle)


def _mkl_runner(ops: Sequence[Op], batch_hint: int | None = None) -> PeerRunner:
    op = _single_linear(ops, "mkl")
    handle = MklCsr(op.weight, batch_hint=batch_hint)
    b = op.bias

    def forward(x: np.ndarray) -> np.ndarray:
        y = handle.matmul(x)
        if b is not None:
            y += b
        return y

    return PeerRunner("mkl", forward, handle)


def weight_bytes(engine: str, ops: Sequence[Op]) -> int:
    """Bytes of the weights as the peer stores them (bias not counted)."""
    total = 0
    for op in ops:
        if op.weight is None:
            continue
        rows, cols, nnz = op.weight.rows, op.weight.cols, op.weight.nnz
        if engine in ("scipy", "mkl"):
            total += nnz * 8 + (rows + 1) * 4        # float32 + int32 indices and row pointers
        elif engine == "torch-csr":
            total += nnz * 12 + (rows + 1) * 8       # float32 + int64
        else:
            total += rows * cols * 4
    return total
