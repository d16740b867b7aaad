"""Fuzz model construction and forward passes: ``Model([...])`` from random
layer configurations and arrays, run on random inputs.

The bytes choose the layers (kinds, shapes, strides, paddings, pool options),
their weights (dense with zeros, scipy matrices, or raw CSR arrays that may
break every invariant; values that may be NaN or Inf), the backend and the
input (shape, dtype, NaN, non-contiguous views). Construction and the forward
pass must either raise one of sparsenet's typed errors (``ModelError``
subclasses) or give the result of the independent NumPy reference in
tests/conftest.py (weights and inputs are small dyadic numbers, so the float32
engine and the float64 reference agree closely). Anything else is a finding.

    python tests/fuzz/fuzz_model.py tests/fuzz/corpus/model -max_total_time=60
"""

from __future__ import annotations

import os
import sys
import warnings

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
# The checkout's package, or another copy (tests/sanitize/run.sh points this at its sanitized build).
# The sparsenet that Python finds (installed, or PYTHONPATH=python for the dev
# build), unless SPARSENET_FUZZ_PACKAGE names another (the sanitized build).
if os.environ.get("SPARSENET_FUZZ_PACKAGE"):
    sys.path.insert(0, os.environ["SPARSENET_FUZZ_PACKAGE"])
sys.path.insert(0, os.path.join(HERE, ".."))  # tests/conftest.py: the NumPy reference

with atheris.instrument_imports(include=["sparsenet"]):
    import numpy as np
    import scipy.sparse

    import sparsenet
    from sparsenet import (AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Model, ModelError, ReLU, Softmax,
                           SparseWeight)

from conftest import reference_forward  # noqa: E402

VALUES = np.array([0, 0, 0, 0.5, -0.5, 1, -1, 2, -2, 0.25, np.nan, np.inf], np.float32)
EXPECTED = (ModelError, MemoryError)
KINDS = ["linear", "conv2d", "maxpool2d", "avgpool2d", "relu", "flatten", "softmax", "dropout"]


def _values(fdp: atheris.FuzzedDataProvider, shape, finite: bool) -> np.ndarray:
    size = int(np.prod(shape))
    raw = np.frombuffer(fdp.ConsumeBytes(size).ljust(size, b"\0"), np.uint8)
    table = VALUES[:-2] if finite else VALUES
    return table[raw % len(table)].reshape(shape)


def _int_or_pair(fdp, low, high):
    if fdp.ConsumeBool():
        return fdp.ConsumeIntInRange(low, high)
    return (fdp.ConsumeIntInRange(low, high), fdp.ConsumeIntInRange(low, high))


def _weight(fdp, shape):
    finite = fdp.ConsumeIntInRange(0, 15) != 0
    mode = fdp.ConsumeIntInRange(0, 3)
    dense = _values(fdp, shape, finite)
    if mode == 0:
        return dense
    if mode == 1:
        return scipy.sparse.csr_matrix(dense.reshape(shape[0], -1))
    if mode == 2:
        return SparseWeight.from_dense(dense)
    # Raw CSR arrays, perturbed so that invariants may break.
    rows, cols = shape[0], int(np.prod(shape[1:]))
    matrix = dense.reshape(rows, cols)
    indptr = np.concatenate([[0], np.cumsum((matrix != 0).sum(axis=1))]).astype(np.int64)
    indices = np.nonzero(matrix)[1].astype(np.int64)
    data = matrix[matrix != 0]
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        target = fdp.ConsumeIntInRange(0, 2)
        array = (indptr, indices, data)[target]
        if array.size:
            where = fdp.ConsumeIntInRange(0, array.size - 1)
            array[where] = fdp.ConsumeIntInRange(-3, cols + 3) if target < 2 else VALUES[fdp.ConsumeIntInRange(0, 11)]
    index_dtype = [np.int64, np.int32, np.uint16, np.uint8][fdp.ConsumeIntInRange(0, 3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a negative perturbed index wraps in the unsigned casts: still an int
        return SparseWeight(shape, indptr.astype(index_dtype), indices.astype(index_dtype), data)


def _bias(fdp, rows):
    choice = fdp.ConsumeIntInRange(0, 7)
    if choice == 0:
        return None
    length = rows + (choice == 1) - (choice == 2)
    return _values(fdp, (max(length, 0),), fdp.ConsumeIntInRange(0, 15) != 0)


def _layer(fdp):
    kind = fdp.PickValueInList(KINDS)
    if kind == "linear":
        shape = (fdp.ConsumeIntInRange(1, 12), fdp.ConsumeIntInRange(1, 48))
        return Linear(_weight(fdp, shape), _bias(fdp, shape[0]))
    if kind == "conv2d":
        shape = (fdp.ConsumeIntInRange(1, 6), fdp.ConsumeIntInRange(1, 4), fdp.ConsumeIntInRange(1, 4),
                 fdp.ConsumeIntInRange(1, 4))
        weight = _weight(fdp, shape)
        padding = fdp.PickValueInList(["same", "valid", "int"])
        padding = _int_or_pair(fdp, -1, 3) if padding == "int" else padding
        kernel_size = shape[2:] if isinstance(weight, scipy.sparse.spmatrix) else None
        return Conv2d(weight, _bias(fdp, shape[0]), stride=_int_or_pair(fdp, 0, 3), padding=padding,
                      kernel_size=kernel_size, in_channels=shape[1] if kernel_size else None)
    if kind in ("maxpool2d", "avgpool2d"):
        kernel = _int_or_pair(fdp, 0, 4)
        stride = None if fdp.ConsumeBool() else _int_or_pair(fdp, 0, 3)
        args = dict(stride=stride, padding=_int_or_pair(fdp, 0, 2), ceil_mode=fdp.ConsumeBool())
        if kind == "maxpool2d":
            return MaxPool2d(kernel, **args)
        return AvgPool2d(kernel, count_include_pad=fdp.ConsumeBool(), **args)
    if kind == "dropout":
        return Dropout(fdp.ConsumeProbability())
    return {"relu": ReLU, "flatten": Flatten, "softmax": Softmax}[kind]()


def _input(fdp):
    ndim = fdp.PickValueInList([2, 4, 4, 4, 3])
    shape = tuple(fdp.ConsumeIntInRange(0 if fdp.ConsumeIntInRange(0, 31) == 0 else 1, 12) for _ in range(ndim))
    x = _values(fdp, shape, fdp.ConsumeIntInRange(0, 15) != 0)
    kind = fdp.ConsumeIntInRange(0, 7)
    if kind == 1:
        x = x.astype(np.float64)
    elif kind == 2:
        x = x.astype(np.float16)
    elif kind == 3:
        x = np.asfortranarray(x)
    elif kind == 4 and ndim == 4:  # a non-contiguous view of a wider array
        x = np.repeat(x, 2, axis=3)[..., ::2]
    elif kind == 5:
        x = x.astype(np.int32, copy=False) if np.isfinite(x).all() else x
    return x


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            layers = [_layer(fdp) for _ in range(fdp.ConsumeIntInRange(1, 6))]
            backend = fdp.PickValueInList(["auto", "sparse", "dense"])
            input_shape = None
            x = _input(fdp)
            if fdp.ConsumeBool() and x.ndim in (2, 4):
                input_shape = x.shape[1:]
            model = Model(layers, backend=backend, input_shape=input_shape)
            y = model(x)
        except EXPECTED:
            return
    # It ran: it must agree with the reference, to a tolerance scaled by the
    # largest intermediate value (float32 rounding grows with it).
    xf = np.asarray(x, np.float64)
    if xf.shape[0] == 0:  # an empty batch: the reference cannot reshape it, so compare shapes via one sample
        one = reference_forward(layers, np.zeros((1, *xf.shape[1:])))
        assert y.dtype == np.float32 and y.shape == (0, *one.shape[1:]), (y.shape, one.shape)
        return
    scale = max(float(np.abs(xf).max()) if xf.size else 0.0, 1.0)
    for end in range(1, len(layers) + 1):
        out = reference_forward(layers[:end], xf)
        scale = max(scale, float(np.abs(out).max()) if out.size else 0.0)
    assert y.dtype == np.float32 and y.shape == out.shape, (y.shape, out.shape)
    np.testing.assert_allclose(y, out, rtol=1e-4, atol=1e-5 * scale)


def main() -> None:
    argv = list(sys.argv)
    argv[1:1] = ["-timeout=20", "-rss_limit_mb=3072", "-max_len=4096"]
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
