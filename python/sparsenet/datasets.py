"""Readers for MNIST-format IDX files: ten classes of 28x28 uint8 images under
MNIST's file names (MNIST, Fashion-MNIST, KMNIST). ``read_idx`` reads any IDX
file (EMNIST's too; ``load_mnist`` does not take their names or 26-47 classes).

Nothing is downloaded: name the directory that holds the four files, plain or
gzipped, e.g. ``load_mnist("../shared/data/mnist")`` or Debian's
``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``.

The MNIST database is by Yann LeCun, Corinna Cortes and Christopher J. C.
Burges; Fashion-MNIST by Han Xiao, Kashif Rasul and Roland Vollgraf (Zalando
Research, MIT licence).
"""

from __future__ import annotations

import gzip
import os
from typing import NamedTuple

import numpy as np

from .errors import FormatError

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: str | os.PathLike, max_bytes: int = 1 << 31) -> np.ndarray:
    """One IDX file (``.gz`` or raw) as a numpy array of its declared type and shape.

    The header (``0 0 type ndim``, then ``ndim`` big-endian uint32 sizes) is
    checked against the payload before anything large is allocated."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            head = stream.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES or head[3] == 0:
                raise FormatError(f"{path}: not an IDX file (magic bytes {head.hex() or 'missing'})")
            dtype, ndim = np.dtype(_IDX_TYPES[head[2]]), head[3]
            dims_raw = stream.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise FormatError(f"{path}: header declares {ndim} dimensions but the file ends inside it")
            shape = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))
            expected = dtype.itemsize
            for size in shape:  # Python ints: no overflow on hostile headers
                expected *= size
            if expected > max_bytes:
                raise FormatError(f"{path}: shape {shape} needs {expected} bytes, over max_bytes={max_bytes}")
            payload = stream.read(expected + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise FormatError(f"{path}: cannot read: {exc}") from None
    if len(payload) != expected:
        problem = "ends early" if len(payload) < expected else "has trailing bytes"
        raise FormatError(f"{path}: header shape {shape} ({expected} bytes of {dtype.str}) but the payload "
                          f"{problem} ({len(payload) if len(payload) < expected else 'more'} bytes)")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: str, stem: str) -> str:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"{directory}: no {stem}[.gz] (an MNIST-format directory holds "
                            f"{', '.join(s for pair in _FILES.values() for s in pair)}, gzipped or not)")


class Split(NamedTuple):
    images: np.ndarray   # float32 (N, 1, 28, 28) in [0, 1]
    labels: np.ndarray   # int64 (N,)


def load_mnist(directory: str | os.PathLike, split: str = "train", limit: int | None = None) -> Split:
    """Images as float32 (N, 1, rows, cols) scaled to [0, 1] and labels as int64.

    ``split``: "train" (60,000) or "test" (10,000); ``limit`` keeps the first N."""
    if split not in _FILES:
        raise FormatError(f"split must be 'train' or 'test', got {split!r}")
    directory = os.fspath(directory)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0):
        raise FormatError(f"limit must be an int >= 0 or None, got {limit!r}")
    if not os.path.isdir(directory):
        what = "not a directory" if os.path.exists(directory) else "no such directory"
        raise FileNotFoundError(f"{directory}: {what} (MNIST-format IDX files are expected there)")
    image_path, label_path = (_find(directory, stem) for stem in _FILES[split])
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise FormatError(f"{image_path}: expected uint8 images of shape (N, rows, cols), got {images.dtype} "
                          f"{images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise FormatError(f"{label_path}: labels of shape {labels.shape} do not match {images.shape[0]} images "
                          f"in {image_path}")
    if labels.dtype != np.uint8:
        raise FormatError(f"{label_path}: expected uint8 labels, got {labels.dtype}")
    if labels.size and int(labels.max()) > 9:
        raise FormatError(f"{label_path}: label {int(labels.max())} outside 0..9")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return Split((images[:, None].astype(np.float32) / np.float32(255)), labels.astype(np.int64))


def predictions(model, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Top-1 class of every image under a sparsenet model (or any callable returning logits), in batches."""
    out = np.empty(len(images), dtype=np.int64)
    for start in range(0, len(images), batch_size):
        logits = model(np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32))
        out[start:start + batch_size] = np.asarray(logits).argmax(axis=1)
    return out


def accuracy(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy of a sparsenet model (or any callable returning logits)."""
    if len(images) != len(labels):
        raise FormatError(f"{len(images)} images but {len(labels)} labels")
    return int((predictions(model, images, batch_size) == labels).sum()) / max(1, len(images))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends in ``.gz``)."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("=")
    if dtype not in codes or array.ndim == 0 or array.ndim > 255:
        raise FormatError(f"IDX holds uint8, int8, int16, int32, float32 or float64 arrays of 1 to 255 "
                          f"dimensions, not {array.dtype} {array.shape}")
    header = bytes([0, 0, codes[dtype], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = array.astype(dtype.newbyteorder(">"), copy=False).tobytes()
    path = os.fspath(path)
    opener = (lambda p: gzip.GzipFile(p, "wb", mtime=0)) if path.endswith(".gz") else (lambda p: open(p, "wb"))
    with opener(path) as stream:
        stream.write(header + payload)
