"""A C++ project that knows sparsenet only through find_package (tests/cpp/consumer)
builds the example application against the installed package and must
reproduce Python's output for the same model and input.

By default the package is the pip-installed one; SPARSENET_CMAKE_DIR names
another installed sparsenet's CMake directory instead (CI builds one without
Python, on the system OpenBLAS: -DSPARSENET_BLAS=openblas)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sparsenet
from sparsenet.cli import cmake_dir

CONSUMER = Path(__file__).parent / "cpp" / "consumer"


def _package_dir() -> str:
    return os.environ.get("SPARSENET_CMAKE_DIR") or cmake_dir()


@pytest.fixture(scope="module")
def classify(tmp_path_factory):
    if "SPARSENET_CMAKE_DIR" in os.environ:
        assert os.path.exists(os.path.join(_package_dir(), "sparsenetConfig.cmake")), _package_dir()
    elif not os.path.exists(os.path.join(cmake_dir(), "sparsenetConfig.cmake")):
        pytest.skip("sparsenet is not pip-installed here (no sparsenetConfig.cmake next to the package)")
    cmake = shutil.which("cmake")
    if cmake is None or shutil.which("c++") is None:
        pytest.skip("needs cmake and a C++ compiler")
    build = tmp_path_factory.mktemp("consumer")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run([cmake, "-S", str(CONSUMER), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=Release",
                    f"-Dsparsenet_DIR={_package_dir()}"], check=True, capture_output=True)
    subprocess.run([cmake, "--build", str(build)], check=True, capture_output=True)
    return build / "classify"


@pytest.fixture(scope="module")
def no_alloc(classify):
    return classify.parent / "no_alloc"


@pytest.mark.parametrize("arch", ["lenet5", "lenet_300_100"])
def test_cpp_example_reproduces_python(tmp_path, classify, arch):
    model = sparsenet.models.random_model(arch, seed=5, backend="sparse")
    model.save(tmp_path / "model.npz", compress=arch == "lenet5")
    x = np.random.default_rng(1).random((4, *model.input_shape), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run([str(classify), str(tmp_path / "model.npz"), str(tmp_path / "x.npy"), "--runs", "2",
                          "--out", str(tmp_path / "y.npy")], check=True, capture_output=True, text=True)
    assert "top-5 classes of sample 0" in run.stdout and "speedup" in run.stdout
    # The dense baseline is the OpenBLAS the package was built with.
    config = Path(_package_dir(), "sparsenetConfig.cmake").read_text()
    source = "system OpenBLAS" if 'set(_sparsenet_blas "openblas")' in config else "scipy-openblas32"
    assert "dense baseline: OpenBLAS " in run.stdout and f"({source}, core" in run.stdout, run.stdout
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model(x), rtol=1e-5, atol=1e-6)


def test_cpp_example_reads_pgm(tmp_path, classify):
    model = sparsenet.models.lenet5(seed=2, backend="sparse")
    model.save(tmp_path / "model.npz")
    pixels = np.random.default_rng(3).integers(0, 256, (28, 28), dtype=np.uint8)
    (tmp_path / "digit.pgm").write_bytes(b"P5\n28 28\n255\n" + pixels.tobytes())
    subprocess.run([str(classify), str(tmp_path / "model.npz"), str(tmp_path / "digit.pgm"), "--runs", "1",
                    "--out", str(tmp_path / "y.npy")], check=True, capture_output=True)
    expected = model((pixels / np.float32(255)).astype(np.float32)[None, None])
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-6)


def _conv_and_wide_fc_model():
    """Direct convolution over channel panels and output-channel groups, a
    fully connected layer wide enough for column panels at batch 64."""
    rng = np.random.default_rng(7)
    conv = rng.standard_normal((64, 48, 3, 3)).astype(np.float32)
    conv[rng.random(conv.shape) > 0.3] = 0
    fc = rng.standard_normal((16, 64 * 14 * 14)).astype(np.float32)
    fc[rng.random(fc.shape) > 0.1] = 0
    return sparsenet.Model([sparsenet.Conv2d(conv, None, padding=1), sparsenet.ReLU(), sparsenet.MaxPool2d(2),
                            sparsenet.Flatten(), sparsenet.Linear(fc[:, : 64 * 7 * 7], None)],
                           input_shape=(48, 14, 14))


@pytest.mark.parametrize("arch", ["lenet5", "mnist_cnn", "conv_and_wide_fc"])
@pytest.mark.parametrize("backend", ["sparse", "dense", "auto"])
@pytest.mark.parametrize("threads, batch", [(1, 1), (2, 1), (2, 64)])
def test_steady_state_forward_allocates_nothing(tmp_path, no_alloc, arch, backend, threads, batch):
    """Model::forward's promise (and issue 8's): after the first calls for a
    batch size, forward passes make no heap allocation (operator new counted)."""
    model = _conv_and_wide_fc_model() if arch == "conv_and_wide_fc" else sparsenet.models.random_model(arch, seed=3)
    model.save(tmp_path / "model.npz")
    run = subprocess.run([str(no_alloc), str(tmp_path / "model.npz"), backend, str(threads), str(batch)],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "allocations: 0" in run.stdout, run.stdout + run.stderr


@pytest.mark.parametrize("arch", ["linear", "conv", "conv_pool_conv", "conv_and_wide_fc", "mnist_cnn"])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_forward_may_write_over_its_input(tmp_path, classify, arch, batch):
    """The last layer writes straight into the caller's output buffer, unless
    that buffer overlaps the input: a model run in place must give the result
    of a run into a separate buffer (a lone fully connected layer at batch 1
    would otherwise overwrite inputs that later rows still read; at batch 8 the
    feature-map layers run image by image, conv_pool_conv's last one into the
    output)."""
    rng = np.random.default_rng(5)
    if arch == "linear":
        model = sparsenet.Model([sparsenet.Linear(rng.standard_normal((32, 64)).astype(np.float32), None)],
                                input_shape=(64,))
    elif arch == "conv":
        weight = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
        model = sparsenet.Model([sparsenet.Conv2d(weight, None, padding=1)], input_shape=(8, 9, 9))
    elif arch == "conv_pool_conv":
        w1 = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
        w2 = rng.standard_normal((8, 6, 3, 3)).astype(np.float32)
        model = sparsenet.Model([sparsenet.Conv2d(w1, None, padding=1), sparsenet.ReLU(), sparsenet.MaxPool2d(2),
                                 sparsenet.Conv2d(w2, None, padding=1)], input_shape=(8, 10, 10))
    elif arch == "conv_and_wide_fc":
        model = _conv_and_wide_fc_model()
    else:
        model = sparsenet.models.random_model(arch, seed=3)
    model.save(tmp_path / "model.npz")
    run = subprocess.run([str(classify.parent / "in_place"), str(tmp_path / "model.npz"), str(batch)],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "in place: same" in run.stdout, run.stdout + run.stderr


def test_cmake_dir_flag():
    result = subprocess.run([sys.executable, "-m", "sparsenet", "--cmake-dir"], check=True, capture_output=True,
                            text=True)
    assert result.stdout.strip() == cmake_dir()


@pytest.mark.parametrize("batch", [1, 3])
def test_cpp_api_refuses_bad_input(tmp_path, classify, batch):
    """C++ callers get typed errors too: Model::forward throws InputError for a
    NaN or an Inf at the first or last float and for null pointers (it read
    them: NaN came out, null crashed), save_npy ShapeError for a tensor short of
    its shape (it wrote an unreadable file), load_model FormatError for a
    directory (it let std::ios_base::failure escape)."""
    model = sparsenet.models.random_model("lenet5", seed=2)
    model.save(tmp_path / "model.npz")
    run = subprocess.run([str(classify.parent / "bad_input"), str(tmp_path / "model.npz"), str(batch),
                          str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 10 and all(line.startswith("refused: ") for line in lines), run.stdout
    assert f"input of shape ({batch}, 1, 28, 28) contains NaN or Inf" in lines[0]
    assert "input pointer is null" in lines[6] and "output pointer is null" in lines[7]
    assert "short.npy: tensor shape (5,) needs 5 floats but it holds 1" in lines[8]
    assert "is a directory" in lines[9]
