"""pytest-benchmark set-up for the sparsenet suite: options, markers, the shared
model cache, machine info, and the sparse/dense ratio table at the end."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))  # benchlib, whatever --import-mode says

try:
    import sparsenet
except ImportError as exc:  # pragma: no cover - a set-up problem, not a bench result
    raise pytest.UsageError(f"cannot import sparsenet ({exc}); install it or run with PYTHONPATH=python") from None

import benchlib  # noqa: E402

THREADS_ENV = "SPARSENET_BENCH_THREADS"
LARGE_ENV = "SPARSENET_BENCH_LARGE"
LOAD_AT_START = pytest.StashKey[tuple]()
# Layers first, whole networks last, whatever the file names sort to.
RUN_ORDER = ("fc", "conv", "end_to_end")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sparsenet", "sparsenet benchmarks")
    group.addoption("--threads", type=int, default=None, metavar="N",
                    help=f"threads for sparse kernels and OpenBLAS alike (sparsenet.set_num_threads); "
                         f"default ${THREADS_ENV}, else the engine's default (SPARSENET_NUM_THREADS or all cores)")
    group.addoption("--large-batches", action="store_true", default=False,
                    help=f"also run batch-64 convolutions and VGG-16 end to end at batch 64 (slow); "
                         f"same as {LARGE_ENV}=1")


def _requested_threads(config: pytest.Config) -> int | None:
    threads = config.getoption("threads")
    if threads is None and os.environ.get(THREADS_ENV):
        try:
            threads = int(os.environ[THREADS_ENV])
        except ValueError:
            raise pytest.UsageError(f"{THREADS_ENV}={os.environ[THREADS_ENV]!r} is not an integer") from None
    if threads is not None and threads < 1:
        raise pytest.UsageError(f"--threads / {THREADS_ENV} must be >= 1, got {threads}")
    return threads


def _large_enabled(config: pytest.Config) -> bool:
    return config.getoption("large_batches") or os.environ.get(LARGE_ENV, "") not in ("", "0")


def pytest_configure(config: pytest.Config) -> None:
    for marker, text in (
        ("fc", "fully connected layer benchmarks"),
        ("conv", "VGG-16 convolution layer benchmarks"),
        ("end_to_end", "whole-network benchmarks (LeNet-5, mnist_cnn, VGG-16)"),
        ("large", f"slow cases, skipped unless --large-batches or {LARGE_ENV}=1"),
    ):
        config.addinivalue_line("markers", f"{marker}: {text}")
    threads = _requested_threads(config)
    if threads is not None:
        sparsenet.set_num_threads(threads)
    if hasattr(os, "getloadavg"):
        config.stash[LOAD_AT_START] = os.getloadavg()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item (tests/ too, if both are run): touch only ours.
    slots = [i for i, item in enumerate(items) if BENCH_DIR in item.path.parents]

    def rank(item: pytest.Item) -> int:
        return next((i for i, m in enumerate(RUN_ORDER) if item.get_closest_marker(m)), len(RUN_ORDER))

    # Stable sort: within a file the cases keep their build-once order.
    for slot, item in zip(slots, sorted((items[i] for i in slots), key=rank)):
        items[slot] = item
    if _large_enabled(config):
        return
    skip = pytest.mark.skip(reason=benchlib.LARGE_REASON)
    for i in slots:
        if items[i].get_closest_marker("large") is not None:
            items[i].add_marker(skip)


@pytest.fixture(scope="session")
def model_cache() -> benchlib.ModelCache:
    return benchlib.ModelCache()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    info = sparsenet.kernel_info()
    machine_info["sparsenet"] = {
        "version": sparsenet.__version__,
        "isa": info["isa"],
        "isa_forced_by": info["forced_by"],
        "blas": info["blas"],
        "num_threads": sparsenet.get_num_threads(),
        "threads_requested": _requested_threads(config),
        "load_average_before_run": list(config.stash.get(LOAD_AT_START, ())),
    }


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    """Put the ratio into the JSON: speedup_vs_dense on each sparse entry, and the
    whole table under "sparsenet_speedups"."""
    records = [{"group": b["group"], "backend": b["extra_info"].get("backend"), "median": b["stats"]["median"],
                "extra_info": b["extra_info"], "json": b}
               for b in output_json.get("benchmarks", []) if "backend" in b.get("extra_info", {})]
    table = []
    for row in benchlib.pair_up(records):
        if "speedup" not in row:
            continue
        row["sparse"]["json"]["extra_info"]["speedup_vs_dense"] = row["speedup"]
        row["sparse"]["json"]["extra_info"]["dense_median_s"] = row["dense"]["median"]
        table.append({"group": row["group"], "speedup": row["speedup"],
                      "sparse_median_s": row["sparse"]["median"], "dense_median_s": row["dense"]["median"],
                      "nnz": row["sparse"]["extra_info"]["nnz"],
                      "sparse_gflops_real": row["sparse"]["extra_info"]["gflops_real"],
                      "sparse_gflops_dense_equivalent": row["sparse"]["extra_info"]["gflops_dense_equivalent"],
                      "dense_gflops": row["dense"]["extra_info"]["gflops_dense_equivalent"],
                      "sparse_gbytes_per_s": row["sparse"]["extra_info"]["gbytes_per_s"],
                      "dense_gbytes_per_s": row["dense"]["extra_info"]["gbytes_per_s"]})
    output_json["sparsenet_speedups"] = table


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    records = config.stash.get(benchlib.RESULTS, [])
    if not records:
        return
    info = sparsenet.kernel_info()
    write = terminalreporter.write_line
    terminalreporter.write_sep("=", f"sparsenet: sparse vs dense, medians (threads: {sparsenet.get_num_threads()}, "
                                    f"{info['isa']} kernels)")
    for line in benchlib.ratio_table(benchlib.pair_up(records)):
        write(line)
    write("")
    write("speedup = dense median / sparse median (> 1: sparse wins). GFLOP/s: sparse real = 2*nnz*batch*spatial/t, "
          "dense-eq = 2*rows*cols*batch*spatial/t;")
    write("dense GFLOP/s = what the BLAS executes. GB/s = (weights as stored + input + output) / t.")
    write(f"BLAS: {info['blas']}")
    start = config.stash.get(LOAD_AT_START, None)
    if start:
        # Taken before the first benchmark, so it is other processes' load, not ours.
        cores = os.cpu_count() or 1
        note = f"load average before the run: {start[0]:.2f} on {cores} cores"
        if start[0] > 0.5 * cores:
            note += " (busy machine: compare the ratios rather than the times)"
        write(note)
