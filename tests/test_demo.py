"""The shipped pruned LeNet-5 and `sparsenet demo`: the README's main job."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import sparsenet
from sparsenet.cli import DEMO_MODEL, DEMO_SAMPLE, data_path, main
from sparsenet.datasets import accuracy, load_mnist

MNIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")


def shipped_record() -> dict:
    with open(data_path(DEMO_MODEL.replace(".npz", ".json"))) as stream:
        return json.load(stream)


def test_shipped_model_is_pruned_twelvefold_and_both_backends_agree():
    sparse = sparsenet.Model.load(data_path(DEMO_MODEL), backend="sparse")
    dense = sparsenet.Model.load(data_path(DEMO_MODEL), backend="dense")
    weights = sum(layer.weight.rows * layer.weight.cols for layer in sparse.layers if hasattr(layer, "weight"))
    assert weights == 430_500  # Caffe's LeNet-5: 500 + 25,000 + 400,000 + 5,000
    assert sparse.nnz / weights <= 0.083, "at least 12x fewer weights (Han et al.)"
    sample = load_mnist(data_path(DEMO_SAMPLE), "test")
    logits_sparse, logits_dense = sparse(sample.images), dense(sample.images)
    np.testing.assert_allclose(logits_sparse, logits_dense, rtol=1e-4, atol=1e-4)
    assert accuracy(sparse, sample.images, sample.labels) >= 0.98


@pytest.mark.skipif(not os.path.isdir(MNIST_DIR), reason="../shared/data/mnist is absent")
def test_shipped_model_matches_its_record_on_the_full_test_set():
    record = shipped_record()
    test = load_mnist(MNIST_DIR, "test")
    errors = {backend: 1 - accuracy(sparsenet.Model.load(data_path(DEMO_MODEL), backend=backend),
                                    test.images, test.labels) for backend in ("sparse", "dense")}
    assert errors["sparse"] == errors["dense"]
    assert errors["sparse"] == pytest.approx(record["pruned_error"], abs=1e-9)
    assert errors["sparse"] <= record["dense_error"] + 0.001 + 1e-9, "within 0.1 point of the dense baseline"
    assert errors["sparse"] < 0.01


def test_demo_command(capsys):
    assert main(["demo", "--min-time", "0.01", "--max-runs", "3"]) == 0
    out = capsys.readouterr().out
    assert "1,000 images" in out and "sparse backend" in out and "faster" in out
    sparse_line = next(line for line in out.splitlines() if line.startswith("accuracy"))
    values = [float(v.split()[0]) for v in sparse_line.split("backend ")[1:]]
    assert values[0] == values[1] >= 98.0


def test_bench_names_a_forced_blas_core(monkeypatch, capsys):
    """Where the environment forces OpenBLAS's kernels (some hosts set
    OPENBLAS_CORETYPE), the bench says so: its dense column may be slower
    than this CPU allows."""
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert main(["bench", data_path(DEMO_MODEL), "--batch", "1", "--min-time", "0.01", "--max-runs", "2"]) == 0
    assert "note: OPENBLAS_CORETYPE=Haswell chooses the dense backend's BLAS kernels" in capsys.readouterr().out
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert main(["bench", data_path(DEMO_MODEL), "--batch", "1", "--min-time", "0.01", "--max-runs", "2"]) == 0
    assert "OPENBLAS_CORETYPE" not in capsys.readouterr().out


def test_demo_on_bad_data_dir_fails_cleanly(tmp_path, capsys):
    assert main(["demo", "--data", str(tmp_path)]) == 2
    assert "t10k-images-idx3-ubyte" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["demo", "--threads", "-3"], "argument --threads: expected a positive integer, got '-3'"),
    (["demo", "--threads", "0"], "argument --threads: expected a positive integer, got '0'"),
    (["bench", "--batch", "1", "x"], "argument --batch: expected a positive integer, got 'x'"),
    (["bench", "--min-time", "-1"], "argument --min-time: expected a positive number, got '-1'"),
    (["convert", "a.onnx", "-o", "b.npz", "--input-shape", "abc"],
     "argument --input-shape: expected positive sizes separated by commas"),
])
def test_cli_refuses_bad_arguments_cleanly(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err

