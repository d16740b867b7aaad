"""The CUDA path: every device kernel against the CPU engine on edge shapes,
whole LeNet-5 / mnist_cnn / VGG-16 forward passes against the CPU, sparse
against cuBLAS. Skipped unless ``sparsenet.cuda_available()``; the typed error
for ``device="cuda"`` without CUDA is tested everywhere."""

from __future__ import annotations

import numpy as np
import pytest

import sparsenet
from sparsenet import _core

from conftest import assert_close, csr_arrays, sparse_dense_array

BUILT = _core.cuda_built()
AVAILABLE = sparsenet.cuda_available()
needs_gpu = pytest.mark.skipif(not AVAILABLE, reason="no CUDA device, or sparsenet built without CUDA "
                                                     "(-C cmake.define.SPARSENET_ENABLE_CUDA=ON)")
DEVICE_BACKENDS = ["sparse", "dense", "auto"]


# ------------------------------------------------------- without a GPU as well
def test_cuda_available_is_a_bool():
    assert isinstance(sparsenet.cuda_available(), bool)
    if not BUILT:
        assert sparsenet.cuda_available() is False


def test_device_error_is_a_model_error():
    assert issubclass(sparsenet.DeviceError, sparsenet.ModelError)
    assert issubclass(sparsenet.DeviceError, ValueError)


@pytest.mark.skipif(AVAILABLE, reason="a CUDA device is present")
def test_load_on_cuda_without_cuda_raises_device_error(tmp_path):
    path = tmp_path / "lenet5.npz"
    sparsenet.models.lenet5().save(path)
    with pytest.raises(sparsenet.DeviceError) as info:
        sparsenet.Model.load(path, device="cuda")
    message = str(info.value)
    if BUILT:
        assert "no CUDA device" in message
    else:
        assert "built without CUDA" in message and "SPARSENET_ENABLE_CUDA=ON" in message


@pytest.mark.skipif(AVAILABLE, reason="a CUDA device is present")
def test_to_cuda_without_cuda_raises_device_error():
    model = sparsenet.models.lenet5()
    with pytest.raises(sparsenet.DeviceError, match="device='cuda'"):
        model.to("cuda")
    with pytest.raises(sparsenet.DeviceError):
        sparsenet.CudaModel(model)


@pytest.mark.skipif(not BUILT or AVAILABLE, reason="needs a CUDA build on a machine without a device")
def test_engine_refuses_without_device():
    model = sparsenet.models.lenet5()
    with pytest.raises(sparsenet.DeviceError, match="no CUDA device"):
        _core.CudaModel(model._engine, "sparse")


def test_device_names_are_checked(tmp_path):
    model = sparsenet.models.lenet5()
    assert model.to("cpu") is model
    with pytest.raises(sparsenet.DeviceError, match="device must be one of"):
        model.to("tpu")
    with pytest.raises(sparsenet.DeviceError, match="device must be one of"):
        sparsenet.Model.load(tmp_path / "missing.npz", device="gpu")


# ------------------------------------------------------------ CSR kernels
def cpu_kernel(dense, x, bias, relu, index_bits):
    indptr, indices, data = csr_arrays(dense)
    rows, cols = dense.shape
    return _core._raw_csr_kernel("scalar", rows, cols, indptr, indices, data, x, bias=bias, relu=relu,
                                 index_bits=index_bits)


def gpu_kernel(dense, x, bias, relu, index_bits):
    indptr, indices, data = csr_arrays(dense)
    rows, cols = dense.shape
    return _core._cuda_raw_csr_kernel(rows, cols, indptr, indices, data, x, bias=bias, relu=relu,
                                      index_bits=index_bits)


SHAPES = [(1, 1), (7, 13), (33, 100), (64, 257), (5, 2000), (300, 800)]


@needs_gpu
@pytest.mark.parametrize("index_bits", [16, 32])
@pytest.mark.parametrize("density", [1.0, 0.5, 0.01])
@pytest.mark.parametrize("rows,cols", SHAPES)
@pytest.mark.parametrize("n", [None, 1, 31, 32, 33, 64, 65, 130])
@pytest.mark.parametrize("epilogue", ["none", "bias+relu"])
def test_csr_kernels_match_cpu(rng, index_bits, density, rows, cols, n, epilogue):
    dense = sparse_dense_array((rows, cols), density, rng)
    x = rng.standard_normal((cols,) if n is None else (cols, n)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32) if "bias" in epilogue else None
    relu = "relu" in epilogue
    assert_close(gpu_kernel(dense, x, bias, relu, index_bits), cpu_kernel(dense, x, bias, relu, index_bits),
                 rtol=1e-5)


@needs_gpu
@pytest.mark.parametrize("n", [None, 5, 64])
def test_empty_rows_and_no_nonzeros(rng, n):
    dense = sparse_dense_array((40, 70), 0.3, rng)
    dense[::3] = 0.0  # empty rows
    bias = rng.standard_normal(40).astype(np.float32)
    x = rng.standard_normal((70,) if n is None else (70, n)).astype(np.float32)
    assert_close(gpu_kernel(dense, x, bias, False, 16), cpu_kernel(dense, x, bias, False, 16), rtol=1e-5)
    empty = np.zeros((40, 70), np.float32)
    y = gpu_kernel(empty, x, bias, True, 16)
    expected = np.maximum(bias, 0)[:, None] if n is not None else np.maximum(bias, 0)
    np.testing.assert_array_equal(y, np.broadcast_to(expected, y.shape))


@needs_gpu
@pytest.mark.parametrize("n", [None, 3])
def test_wide_matrix_needs_32_bit_indices(rng, n):
    dense = sparse_dense_array((6, 70000), 0.01, rng)
    x = rng.standard_normal((70000,) if n is None else (70000, n)).astype(np.float32)
    assert_close(gpu_kernel(dense, x, None, False, 32), cpu_kernel(dense, x, None, False, 32), rtol=1e-5)
    with pytest.raises(sparsenet.ShapeError):
        gpu_kernel(dense, x, None, False, 16)


@needs_gpu
@pytest.mark.parametrize("rows,cols", [(1, 1), (33, 100), (300, 800)])
@pytest.mark.parametrize("n", [None, 1, 33, 64])
def test_cublas_baseline_matches_numpy(rng, rows, cols, n):
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    x = rng.standard_normal((cols,) if n is None else (cols, n)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    expected = w.astype(np.float64) @ x.astype(np.float64)
    expected = np.maximum((expected.T + bias).T, 0)
    assert_close(_core._cuda_raw_dense(w, x, bias=bias, relu=True), expected.astype(np.float32), rtol=1e-4)


# ------------------------------------------------- single layers vs the CPU
def compare(layers, x, backend, rtol=1e-4):
    cpu = sparsenet.Model(layers, backend=backend)
    gpu = cpu.to("cuda")
    assert isinstance(gpu, sparsenet.CudaModel)
    assert_close(gpu(x), cpu(x), rtol=rtol)


@needs_gpu
@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("batch", [1, 3, 64])
@pytest.mark.parametrize("density", [1.0, 0.1, 0.0])
def test_linear(rng, backend, batch, density):
    w = sparse_dense_array((37, 70), density, rng)
    layers = [sparsenet.Linear(w, rng.standard_normal(37).astype(np.float32)), sparsenet.ReLU(),
              sparsenet.Linear(sparse_dense_array((10, 37), 0.5, rng)), sparsenet.Softmax()]
    compare(layers, rng.standard_normal((batch, 70)).astype(np.float32), backend)


@needs_gpu
@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (5, 1, 0), (1, 1, 0), (3, 2, 1), (7, 3, 2), (2, 2, 0)])
def test_conv2d(rng, backend, batch, kernel, stride, padding):
    w = sparse_dense_array((6, 4, kernel, kernel), 0.3, rng)
    layers = [sparsenet.Conv2d(w, rng.standard_normal(6).astype(np.float32), stride=stride, padding=padding),
              sparsenet.ReLU()]
    compare(layers, rng.standard_normal((batch, 4, 13, 11)).astype(np.float32), backend)


@needs_gpu
@pytest.mark.parametrize("pool", [
    lambda: sparsenet.MaxPool2d(2),
    lambda: sparsenet.MaxPool2d(3, stride=2, ceil_mode=True),
    lambda: sparsenet.MaxPool2d(3, stride=1, padding=1),
    lambda: sparsenet.AvgPool2d(2),
    lambda: sparsenet.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
    lambda: sparsenet.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
])
@pytest.mark.parametrize("batch", [1, 4])
def test_pooling_relu_flatten(rng, pool, batch):
    layers = [pool(), sparsenet.ReLU(), sparsenet.Flatten()]
    compare(layers, rng.standard_normal((batch, 3, 11, 9)).astype(np.float32), "sparse", rtol=1e-6)


@needs_gpu
def test_batch_zero_and_shape_errors(rng):
    gpu = sparsenet.models.lenet5().to("cuda")
    assert gpu(np.zeros((0, 1, 28, 28), np.float32)).shape == (0, 10)
    with pytest.raises(sparsenet.ShapeError):
        gpu(np.zeros((1, 1, 27, 28), np.float32))
    with pytest.raises(sparsenet.InputError):
        gpu(np.full((1, 1, 28, 28), np.nan, np.float32))


# ------------------------------------------------------------ whole models
@needs_gpu
@pytest.mark.parametrize("name,shape", [("lenet5", (1, 28, 28)), ("mnist_cnn", (1, 28, 28))])
@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_small_models_match_cpu(rng, name, shape, backend, batch):
    cpu = getattr(sparsenet.models, name)(backend=backend)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    assert_close(cpu.to("cuda")(x), cpu(x), rtol=1e-4)


@needs_gpu
@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2])
def test_vgg16_matches_cpu_and_sparse_matches_cublas(rng, batch):
    cpu = sparsenet.models.vgg16(backend="sparse")
    x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
    expected = cpu(x)
    sparse = cpu.to("cuda", backend="sparse")
    dense = cpu.to("cuda", backend="dense")
    assert set(sparse.layer_backends.values()) == {"sparse"}
    assert set(dense.layer_backends.values()) == {"dense"}
    assert_close(sparse(x), expected, rtol=1e-4)
    assert_close(dense(x), expected, rtol=1e-4)


@needs_gpu
def test_load_on_cuda(tmp_path, rng):
    path = tmp_path / "lenet5.npz"
    cpu = sparsenet.models.lenet5()
    cpu.save(path)
    gpu = sparsenet.Model.load(path, device="cuda")
    assert isinstance(gpu, sparsenet.CudaModel) and gpu.to("cpu") is gpu.model
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    assert_close(gpu(x), cpu(x), rtol=1e-4)
    assert "sm_" in gpu.device_name


@needs_gpu
def test_cuda_array_interface_input(rng):
    cupy = pytest.importorskip("cupy")
    cpu = sparsenet.models.lenet5()
    x = rng.standard_normal((5, 1, 28, 28)).astype(np.float32)
    gpu = cpu.to("cuda")
    assert_close(gpu(cupy.asarray(x)), cpu(x), rtol=1e-4)
    with pytest.raises(sparsenet.InputError, match="float32"):
        gpu(cupy.asarray(x, dtype=cupy.float64))
    with pytest.raises(sparsenet.InputError, match="C-contiguous"):
        gpu(cupy.asarray(x)[:, :, ::2])
