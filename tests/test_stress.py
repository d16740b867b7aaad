"""Stress: many threads hammering one shared model, memory that stays flat
over thousands of calls, and one file loaded by several threads at once."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import sparsenet
from sparsenet import Model

from conftest import input_batch

THREADS = 8
SANITIZED = bool(os.environ.get("SPARSENET_SANITIZED"))  # tests/sanitize/run.sh: everything runs ~10x slower


def _hammer(model: Model, inputs: list[np.ndarray], passes: int) -> None:
    """THREADS threads x ``passes`` calls on ``model``, each thread cycling
    through ``inputs`` from its own offset; every result must equal the serial one."""
    serial = [model(x) for x in inputs]
    barrier = threading.Barrier(THREADS)
    mismatches: list[tuple[int, int]] = []

    def worker(thread: int) -> None:
        barrier.wait(timeout=60)
        for step in range(passes):
            index = (thread * 5 + step) % len(inputs)
            if not np.array_equal(model(inputs[index]), serial[index]):
                mismatches.append((thread, step))

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for future in [pool.submit(worker, t) for t in range(THREADS)]:
            future.result(timeout=300)
    assert not mismatches, f"{len(mismatches)} concurrent results differ from the serial run, first {mismatches[:5]}"


@pytest.mark.parametrize("arch,backend,passes", [
    ("lenet5", "sparse", 200), ("lenet5", "dense", 200), ("lenet5", "auto", 200),
    ("lenet_300_100", "sparse", 200), ("mnist_cnn", "sparse", 25), ("mnist_cnn", "dense", 25),
])
def test_threads_hammering_one_model_match_a_serial_run(restore_threads, arch, backend, passes):
    sparsenet.set_num_threads(2)  # the engine's own pool inside each call, too
    model = sparsenet.models.random_model(arch, seed=3, backend=backend)
    inputs = [input_batch(arch, batch, seed=40 + i) for i, batch in enumerate((1, 2, 3, 1, 5, 1, 4, 2))]
    _hammer(model, inputs, passes // 10 if SANITIZED else passes)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _malloc_in_use() -> int | None:
    """Bytes the C allocator has handed out and not taken back (glibc's
    mallinfo2), or None where that is not available."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return info.uordblks + info.hblkhd


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
@pytest.mark.skipif(SANITIZED, reason="ASan's allocator keeps freed memory in quarantine")
@pytest.mark.parametrize("backend", ["sparse", "dense"])
def test_memory_stays_flat_over_many_calls(restore_threads, backend):
    sparsenet.set_num_threads(1)
    model = sparsenet.models.lenet5(seed=4, backend=backend)
    x = input_batch("lenet5", 1)
    for _ in range(500):  # warm up: caches, the thread pool, NumPy's small-buffer cache
        model(x)
    rss, heap = _resident_bytes(), _malloc_in_use()
    for _ in range(10_000):
        model(x)
    rss_growth = _resident_bytes() - rss
    assert rss_growth < 4 << 20, f"RSS grew by {rss_growth} bytes over 10,000 calls"
    if heap is not None:  # finer: a leak of even a few bytes a call shows here
        heap_growth = _malloc_in_use() - heap
        assert heap_growth < 64 << 10, f"malloc'd memory grew by {heap_growth} bytes over 10,000 calls"


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
@pytest.mark.skipif(SANITIZED, reason="ASan's allocator keeps freed memory in quarantine")
def test_memory_stays_flat_over_many_loads_and_failed_loads(tmp_path):
    model = sparsenet.models.lenet_300_100(seed=4)
    good = tmp_path / "good.npz"
    model.save(good)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    def cycle():
        Model.load(good)
        with pytest.raises(sparsenet.FormatError):
            Model.load(bad)

    for _ in range(20):
        cycle()
    rss = _resident_bytes()
    for _ in range(200):
        cycle()
    growth = _resident_bytes() - rss
    assert growth < 8 << 20, f"RSS grew by {growth} bytes over 200 loads"


@pytest.mark.parametrize("compress", [False, True])
def test_loading_one_file_from_many_threads(tmp_path, compress):
    source = sparsenet.models.lenet5(seed=5)
    path = tmp_path / "lenet5.npz"
    source.save(path, compress=compress)
    x = input_batch("lenet5", 3)
    expected = Model.load(path, backend="sparse")
    reference = expected(x)
    barrier = threading.Barrier(THREADS)

    def load(index: int) -> Model:
        barrier.wait(timeout=60)
        return Model.load(path, backend=("sparse", "dense")[index % 2])

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        models = list(pool.map(load, range(THREADS)))
    for index, model in enumerate(models):
        assert [layer.name for layer in model.layers] == [layer.name for layer in expected.layers]
        for got, want in zip(model.layers, expected.layers):
            if hasattr(want, "weight"):
                for part in ("indptr", "indices", "data"):
                    assert np.array_equal(getattr(got.weight, part), getattr(want.weight, part)), (got.name, part)
                assert np.array_equal(got.bias, want.bias)
        out = model(x)
        if index % 2 == 0:
            assert np.array_equal(out, reference)
        else:
            np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4 * float(np.abs(reference).max()))
