"""Write the seed corpus of the fuzz harnesses (deterministic; run from anywhere).

    python tests/fuzz/make_seeds.py            # rewrites tests/fuzz/corpus/

corpus/load/: inputs of fuzz_load.py. Each is one option byte (see
fuzz_load.options) followed by the bytes of an .npz file: valid sparsenet files
(CSR and dense storage, stored and deflated), valid weight exports read with
arch= (PyTorch dense, scipy CSR groups, TensorFlow triplets) and near-valid
files (a broken graph, a decreasing indptr, a truncated member, a pickle).
Every file is kept to a few KB so the fuzzer mutates quickly.

corpus/model/: inputs of fuzz_model.py (random bytes; its structure comes from
the bytes themselves, so a few varied seeds are enough).
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))

import sparsenet  # noqa: E402
from sparsenet import AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Model, ReLU, Softmax  # noqa: E402



def option_byte(backend: str = "auto", arch: str | None = None) -> int:
    """The option byte fuzz_load.options reads (kept in step with it): bits 0-1 backend, 2-3 arch."""
    return ("auto", "sparse", "dense").index(backend) | (None, "lenet_300_100", "lenet5", "mnist_cnn").index(arch) << 2


class _FixedClock:
    """Stands in for the time module inside zipfile so the seeds are byte-for-byte reproducible."""

    @staticmethod
    def time() -> float:
        return 315532800.0  # 1980-01-01, the earliest zip date

    @staticmethod
    def localtime(seconds=None):
        return time.gmtime(315532800)


def _sparse(shape, density, rng):
    values = rng.choice(np.array([-1.0, -0.5, 0.5, 1.0, 2.0], np.float32), size=shape)
    return np.where(rng.random(shape) < density, values, 0).astype(np.float32)


def _saved(model: Model, compress: bool = False) -> bytes:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.npz")
        model.save(path, compress=compress)
        with open(path, "rb") as handle:
            return handle.read()


def _npz(arrays: dict, compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _zip(members: dict[str, bytes], compress=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compress) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def native_seeds(rng) -> dict[str, bytes]:
    conv_model = Model([Conv2d(_sparse((4, 2, 3, 3), 0.5, rng), np.full(4, 0.5, np.float32), stride=2, padding=1,
                               name="conv"),
                        ReLU(name="relu"), MaxPool2d(2, ceil_mode=True, name="pool"),
                        AvgPool2d(2, stride=1, padding=1, count_include_pad=False, name="avg"),
                        Flatten(name="flat"), Dropout(0.25, name="drop"),
                        Linear(_sparse((5, 4 * 3 * 3), 0.3, rng), np.ones(5, np.float32), name="fc"),
                        Softmax(name="softmax")],
                       input_shape=(2, 7, 8), name="conv_net")
    # Wide and very sparse, so the file stores it as CSR.
    mlp = Model([Linear(_sparse((16, 300), 0.01, rng), np.zeros(16, np.float32), name="fc1"), ReLU(),
                 Linear(_sparse((3, 16), 0.9, rng), None, name="fc2")], input_shape=(300,), name="mlp")
    seeds = {
        "native_conv": _saved(conv_model),
        "native_conv_deflate": _saved(conv_model, compress=True),
        "native_mlp_csr": _saved(mlp),
        "native_mlp_csr_deflate": _saved(mlp, compress=True),
    }
    # Near-valid: one thing wrong each.
    members = _members(seeds["native_mlp_csr"])
    graph = json.loads(np.load(io.BytesIO(members["__sparsenet__.npy"]), allow_pickle=False)[()])
    bad_graph = json.loads(json.dumps(graph))
    bad_graph["layers"][0]["weight"]["shape"] = [16, 2**31 - 1]
    bad_graph["layers"].insert(1, {"name": "pool", "kind": "maxpool2d", "kernel_size": [3, 3]})
    seeds["near_bad_graph"] = _zip({**members, "__sparsenet__.npy": _npy(np.array(json.dumps(bad_graph).encode()))})
    indptr = np.load(io.BytesIO(members["fc1.weight.indptr.npy"]))
    indptr = indptr.copy()
    indptr[3], indptr[4] = indptr[4] + 1, indptr[3]
    seeds["near_decreasing_indptr"] = _zip({**members, "fc1.weight.indptr.npy": _npy(indptr)})
    seeds["near_truncated_member"] = _zip({**members, "fc1.weight.data.npy": members["fc1.weight.data.npy"][:-5]})
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    seeds["near_pickle"] = _zip({**members, "fc1.bias.npy": pickled.getvalue()}, compress=zipfile.ZIP_DEFLATED)
    return seeds


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _csr_group(dense2d):
    import scipy.sparse

    matrix = scipy.sparse.csr_matrix(dense2d)
    return {"data": matrix.data.astype(np.float32), "indices": matrix.indices.astype(np.int32),
            "indptr": matrix.indptr.astype(np.int32), "shape": np.array(matrix.shape, np.int64),
            "format": np.array(b"csr")}


def arch_seeds(rng) -> dict[str, bytes]:
    """Weight exports for arch= imports, pruned hard so each file stays a few KB."""
    seeds = {}
    arch = sparsenet.models.get_architecture("lenet_300_100")
    scipy_arrays, tf_arrays = {}, {}
    for spec in arch.weighted():
        out, fin = spec.weight_shape
        dense = _sparse((out, fin), 16.0 / (out * fin), rng)
        for part, value in _csr_group(dense).items():
            scipy_arrays[f"{spec.name}.weight.{part}"] = value
        scipy_arrays[f"{spec.name}.bias"] = np.zeros(out, np.float32)
        rows, cols = np.nonzero(dense.T)  # TensorFlow keeps FC kernels as (in, out)
        tf_arrays[f"w_{spec.name}"] = dense.T[rows, cols]
        tf_arrays[f"w_{spec.name}_idx"] = np.stack([rows, cols], axis=1).astype(np.int64)
        tf_arrays[f"w_{spec.name}_shape"] = np.array([fin, out], np.int64)
        tf_arrays[f"b_{spec.name}"] = np.zeros(out, np.float32)
    seeds["arch_lenet_300_100_scipy"] = _npz(scipy_arrays, compress=True)
    seeds["arch_lenet_300_100_tf"] = _npz(tf_arrays, compress=True)

    arch = sparsenet.models.get_architecture("lenet5")
    torch_arrays, tf_arrays = {}, {}
    for spec in arch.weighted():
        shape = spec.weight_shape
        density = 1.0 if shape[0] * int(np.prod(shape[1:])) <= 2000 else 16.0 / np.prod(shape)
        dense = _sparse(shape, density, rng)
        if len(shape) == 4:
            torch_arrays[f"{spec.name}.weight"] = dense
            kernel = dense.transpose(2, 3, 1, 0)  # (kh, kw, in, out)
            index = np.argwhere(kernel != 0)
            tf_arrays[f"w_{spec.name}"] = kernel[tuple(index.T)]
            tf_arrays[f"w_{spec.name}_idx"] = index.astype(np.int64)
            tf_arrays[f"w_{spec.name}_shape"] = np.array(kernel.shape, np.int64)
        else:
            for part, value in _csr_group(dense).items():
                torch_arrays[f"{spec.name}.weight.{part}"] = value
            rows, cols = np.nonzero(dense.T)
            tf_arrays[f"w_{spec.name}"] = dense.T[rows, cols]
            tf_arrays[f"w_{spec.name}_idx"] = np.stack([rows, cols], axis=1).astype(np.int64)
            tf_arrays[f"w_{spec.name}_shape"] = np.array(dense.T.shape, np.int64)
        torch_arrays[f"{spec.name}.bias"] = np.zeros(shape[0], np.float32)
        tf_arrays[f"b_{spec.name}"] = np.zeros(shape[0], np.float32)
    seeds["arch_lenet5_torch_and_scipy"] = _npz(torch_arrays, compress=True)
    seeds["arch_lenet5_tf"] = _npz(tf_arrays, compress=True)
    return seeds


def main() -> None:
    zipfile.time = _FixedClock
    rng = np.random.default_rng(6)
    load_dir = os.path.join(HERE, "corpus", "load")
    model_dir = os.path.join(HERE, "corpus", "model")
    for directory in (load_dir, model_dir):
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            os.remove(os.path.join(directory, name))
    for name, data in native_seeds(rng).items():
        for backend in ("auto", "sparse", "dense"):
            if backend != "auto" and not name.startswith("native_mlp_csr"):
                continue
            with open(os.path.join(load_dir, f"{name}_{backend}"), "wb") as handle:
                handle.write(bytes([option_byte(backend=backend)]) + data)
    for name, data in arch_seeds(rng).items():
        arch = name.split("_", 1)[1].rsplit("_", 1)[0]
        arch = "lenet_300_100" if arch.startswith("lenet_300_100") else "lenet5"
        with open(os.path.join(load_dir, name), "wb") as handle:
            handle.write(bytes([option_byte(arch=arch)]) + data)
    for index in range(6):
        with open(os.path.join(model_dir, f"random_{index}"), "wb") as handle:
            handle.write(rng.integers(0, 256, size=64 + 96 * index, dtype=np.uint8).tobytes())
    sizes = {name: os.path.getsize(os.path.join(load_dir, name)) for name in sorted(os.listdir(load_dir))}
    for name, size in sizes.items():
        print(f"{size:7d}  load/{name}")


if __name__ == "__main__":
    main()
