"""One Model shared by many Python threads, and the GIL released during forward passes."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import sparsenet
from sparsenet import Conv2d, MaxPool2d, Model, ReLU

from conftest import SMALL_CONV_INPUT, arch_reference, assert_close, input_batch, small_conv_model_layers

THREADS = 8


def _models(backend):
    return {
        "mnist_cnn": sparsenet.models.mnist_cnn(seed=8, backend=backend),
        "lenet_300_100": sparsenet.models.lenet_300_100(seed=8, backend=backend),
        "composed": Model(small_conv_model_layers(np.random.default_rng(8)), backend=backend),
    }


def _inputs(name, count):
    rng = np.random.default_rng(100)
    batches = (1, 2, 5, 17)
    if name == "composed":
        return [rng.standard_normal((batches[i % 4], *SMALL_CONV_INPUT)).astype(np.float32) for i in range(count)]
    return [input_batch(name, batches[i % 4], seed=200 + i) for i in range(count)]


@pytest.mark.parametrize("backend", ["sparse", "dense"])
@pytest.mark.parametrize("threads", [1, 2])
def test_concurrent_calls_match_serial_calls(restore_threads, backend, threads):
    sparsenet.set_num_threads(threads)
    for name, model in _models(backend).items():
        inputs = _inputs(name, 3 * THREADS)
        serial = [model(x) for x in inputs]
        barrier = threading.Barrier(THREADS)

        def call(index):
            if index < THREADS:
                barrier.wait(timeout=60)  # start the first wave together
            return model(inputs[index])

        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            concurrent = list(pool.map(call, range(len(inputs))))
        for got, expected in zip(concurrent, serial):
            assert got.shape == expected.shape
            assert np.array_equal(got, expected), name
    if backend == "sparse":
        model = _models(backend)["mnist_cnn"]
        x = _inputs("mnist_cnn", 4)[3]
        assert_close(model(x), arch_reference(model, "mnist_cnn", x))


def test_concurrent_calls_on_different_models(restore_threads):
    """Several models (some sharing layer objects) at once, while the thread count changes."""
    layers = small_conv_model_layers(np.random.default_rng(9))
    models = [Model(layers, backend=backend) for backend in ("sparse", "dense", "auto")]
    x = np.random.default_rng(10).standard_normal((6, *SMALL_CONV_INPUT)).astype(np.float32)
    expected = [model(x) for model in models]

    def call(index):
        if index == 5:
            sparsenet.set_num_threads(1 + index % 2)
        return models[index % 3](x)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(call, range(24)))
    for index, got in enumerate(results):
        np.testing.assert_allclose(got, expected[index % 3], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", ["sparse", "dense"])
def test_concurrent_calls_with_different_input_sizes(restore_threads, backend):
    """Convolutions cache per-size state; threads alternating sizes must not disturb each other."""
    sparsenet.set_num_threads(2)
    rng = np.random.default_rng(11)
    model = Model([Conv2d(rng.standard_normal((16, 3, 3, 3)).astype(np.float32) * (rng.random((16, 3, 3, 3)) < 0.3),
                          np.zeros(16, np.float32), padding=1), ReLU(), MaxPool2d(2)], backend=backend)
    shapes = [(1, 3, 30, 30), (3, 3, 17, 41), (2, 3, 64, 9), (1, 3, 5, 700)]
    inputs = [rng.standard_normal(shapes[i % 4]).astype(np.float32) for i in range(4 * THREADS)]
    serial = [model(x) for x in inputs]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        concurrent = list(pool.map(model, inputs))
    for got, expected in zip(concurrent, serial):
        assert np.array_equal(got, expected)


def test_forward_releases_the_gil(restore_threads):
    """While one thread is inside the engine's forward pass, another runs
    Python code. With a huge switch interval the interpreter never preempts a
    thread, so the main thread can only run during the forward pass if the
    engine released the GIL; no timing is involved."""
    sparsenet.set_num_threads(1)
    model = sparsenet.models.mnist_cnn(seed=1, backend="dense")
    x = np.ascontiguousarray(input_batch("mnist_cnn", 64))
    expected = model(x)
    engine = model._engine  # the binding itself: no NumPy work (which may drop the GIL) around the call
    started = threading.Event()
    state = {"main_ran": False, "seen_by_worker": None}

    def worker():
        started.set()
        y = engine.forward(x)
        state["seen_by_worker"] = state["main_ran"]  # read before the GIL can be given up again
        return y

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(worker)
            started.wait(timeout=60)
            state["main_ran"] = True
            y = future.result(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert np.array_equal(y, expected)
    assert state["seen_by_worker"] is True, "the main thread could not run during forward(): GIL held"
