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
import peers  # noqa: E402

THREADS_ENV = "SPARSENET_BENCH_THREADS"
LARGE_ENV = "SPARSENET_BENCH_LARGE"
SCALING_ENV = "SPARSENET_BENCH_SCALING"
PEERS_ENV = "SPARSENET_BENCH_PEERS"
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
    group.addoption("--scaling", action="store_true", default=False,
                    help=f"also run the scaling cases: FC batch 8/256 and the auto-vs-dense density sweep; "
                         f"same as {SCALING_ENV}=1")
    group.addoption("--peers", default=None, metavar="ENGINES",
                    help=f"also time peer engines on the same cases: comma-separated from "
                         f"{', '.join(peers.ENGINES)}, or 'all' (the installed ones); default ${PEERS_ENV}, else none. "
                         f"One engine per process is fairer: see bench/run_peers.py")


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


def _scaling_enabled(config: pytest.Config) -> bool:
    return config.getoption("scaling") or os.environ.get(SCALING_ENV, "") not in ("", "0")


def _requested_peers(config: pytest.Config) -> list[str]:
    try:
        return peers.parse_engines(config.getoption("peers") or os.environ.get(PEERS_ENV))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_configure(config: pytest.Config) -> None:
    for marker, text in (
        ("fc", "fully connected layer benchmarks"),
        ("conv", "VGG-16 convolution layer benchmarks"),
        ("end_to_end", "whole-network benchmarks (LeNet-5, mnist_cnn, VGG-16)"),
        ("large", f"slow cases, skipped unless --large-batches or {LARGE_ENV}=1"),
        ("scaling", f"batch 8/256 and density-sweep cases, skipped unless --scaling or {SCALING_ENV}=1"),
        ("peer", f"peer-engine cases, deselected unless --peers or {PEERS_ENV} names the engine"),
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
    # Peer cases only for the engines asked for: deselected, not skipped (there are hundreds).
    wanted = set(_requested_peers(config))
    dropped = [item for item in items if BENCH_DIR in item.path.parents and item.get_closest_marker("peer")
               and getattr(item, "callspec", None) and item.callspec.params.get("engine") not in wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        dropped_ids = {id(item) for item in dropped}
        items[:] = [item for item in items if id(item) not in dropped_ids]
        slots = [i for i, item in enumerate(items) if BENCH_DIR in item.path.parents]
    for marker, enabled, reason in (
        ("large", _large_enabled(config), benchlib.LARGE_REASON),
        ("scaling", _scaling_enabled(config), f"scaling cases: opt in with --scaling or {SCALING_ENV}=1"),
    ):
        if enabled:
            continue
        skip = pytest.mark.skip(reason=reason)
        for i in slots:
            if items[i].get_closest_marker(marker) is not None:
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
        "cpu_model": _cpu_model(),
        "peers": {engine: peers.engine_version(engine) for engine in _requested_peers(config)},
        "peer_threads": benchlib.peer_threads(config),
    }
    if not _requested_peers(config):  # sparsenet's own run: what the machine can do, for the % columns
        machine_info["sparsenet"]["probe"] = benchlib.machine_probe(sparsenet.get_num_threads())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


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
    _peer_summary(terminalreporter, config)
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


def _peer_summary(terminalreporter, config: pytest.Config) -> None:
    """One line per peer measurement, with the ratio to sparsenet's sparse median
    when the same run measured it (run_peers.py runs engines apart: see report.py)."""
    records = config.stash.get(benchlib.PEER_RESULTS, [])
    if not records:
        return
    sparse = {r["group"]: r["median"] for r in config.stash.get(benchlib.RESULTS, []) if r["backend"] == "sparse"}
    terminalreporter.write_sep("=", f"peer engines, medians (threads: {benchlib.peer_threads(config)})")
    for rec in records:
        ratio = f"  {rec['median'] / sparse[rec['group']]:.2f}x sparsenet sparse" if rec["group"] in sparse else ""
        terminalreporter.write_line(f"{rec['group']:<44} {rec['backend']:<12} "
                                    f"{benchlib._format_time(rec['median']):>10}{ratio}")
