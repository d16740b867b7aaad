"""The IDX reader: round trips, gz and raw, and every malformed header refused by name."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

import sparsenet
from sparsenet.cli import DEMO_SAMPLE, data_path
from sparsenet.datasets import accuracy, load_mnist, read_idx, write_idx

MNIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, rng, suffix, dtype):
    array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_big_endian(tmp_path):
    write_idx(tmp_path / "x", np.arange(6, dtype=np.uint8).reshape(2, 3))
    raw = (tmp_path / "x").read_bytes()
    assert raw[:4] == bytes([0, 0, 8, 2]) and raw[4:12] == bytes([0, 0, 0, 2, 0, 0, 0, 3]) and raw[12:] == bytes(range(6))


@pytest.mark.parametrize("raw, problem", [
    (b"", "not an IDX file"),
    (bytes([1, 0, 8, 1, 0, 0, 0, 1, 7]), "not an IDX file"),
    (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]), "not an IDX file"),
    (bytes([0, 0, 8, 0]), "not an IDX file"),
    (bytes([0, 0, 8, 2, 0, 0, 0, 1]), "ends inside"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]), "ends early"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 1, 1, 2]), "trailing bytes"),
    (bytes([0, 0, 0x0D, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]), "max_bytes"),
])
def test_bad_idx_files_are_refused_by_name(tmp_path, raw, problem):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(raw)
    with pytest.raises(sparsenet.FormatError, match=problem) as info:
        read_idx(path)
    assert "bad-idx1-ubyte" in str(info.value)


def test_corrupt_gzip_is_a_format_error(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 9]) + bytes(9))[:-12] + b"garbage!")
    with pytest.raises(sparsenet.FormatError, match="x.gz"):
        read_idx(path)


def _mnist_dir(tmp_path, images, labels, split="test"):
    prefix = "t10k" if split == "test" else "train"
    write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels)  # one gzipped, one raw
    return tmp_path


def test_load_mnist_scales_and_shapes(tmp_path, rng):
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    split = load_mnist(_mnist_dir(tmp_path, images, labels), "test")
    assert split.images.shape == (7, 1, 28, 28) and split.images.dtype == np.float32
    np.testing.assert_array_equal(split.images[:, 0] * 255, images.astype(np.float32))
    np.testing.assert_array_equal(split.labels, labels)
    assert load_mnist(tmp_path, "test", limit=3).labels.shape == (3,)


def test_load_mnist_refuses_mismatched_pairs(tmp_path, rng):
    _mnist_dir(tmp_path, np.zeros((5, 28, 28), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(sparsenet.FormatError, match="do not match 5 images"):
        load_mnist(tmp_path, "test")
    _mnist_dir(tmp_path, np.zeros((4, 28, 28), np.uint8), np.full(4, 12, np.uint8))
    with pytest.raises(sparsenet.FormatError, match="label 12"):
        load_mnist(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path, "train")
    with pytest.raises(sparsenet.FormatError, match="split"):
        load_mnist(tmp_path, "validation")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_mnist(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_mnist(tmp_path / "t10k-labels-idx1-ubyte")
    for labels in (np.array([0, -1, 5, 3], np.int8), np.array([0.5, 3.9, 9.0, 1.0], np.float32)):
        _mnist_dir(tmp_path, np.zeros((4, 28, 28), np.uint8), labels)
        with pytest.raises(sparsenet.FormatError, match=f"expected uint8 labels, got {labels.dtype}"):
            load_mnist(tmp_path, "test")
    _mnist_dir(tmp_path, np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8))
    for limit in (-5, 10.5, True):
        with pytest.raises(sparsenet.FormatError, match="limit must be an int >= 0"):
            load_mnist(tmp_path, "test", limit=limit)


def test_shipped_sample_is_the_head_of_the_mnist_test_set():
    sample = load_mnist(data_path(DEMO_SAMPLE), "test")
    assert sample.images.shape == (1000, 1, 28, 28)
    assert sample.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    if not os.path.isdir(MNIST_DIR):
        pytest.skip("../shared/data/mnist is absent")
    full = load_mnist(MNIST_DIR, "test")
    np.testing.assert_array_equal(full.images[:1000], sample.images)
    np.testing.assert_array_equal(full.labels[:1000], sample.labels)


@pytest.mark.skipif(not os.path.isdir(MNIST_DIR), reason="../shared/data/mnist is absent")
def test_genuine_mnist_counts():
    train, test = load_mnist(MNIST_DIR, "train"), load_mnist(MNIST_DIR, "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_accuracy_counts_argmax_hits():
    logits = np.eye(10, dtype=np.float32)[[1, 2, 3, 4]]
    assert accuracy(lambda x: logits[:len(x)], np.zeros((4, 1), np.float32), np.array([1, 2, 0, 4])) == 0.75
    with pytest.raises(sparsenet.FormatError):
        accuracy(lambda x: x, np.zeros((2, 1), np.float32), np.zeros(3))
