"""The CUDA path against cuBLAS on the same weights (skipped without a GPU).

Times are medians of device-side CUDA-event timings of the kernel alone (one
warm-up, operands resident on the device), so host overhead and transfers are
not counted. Each case records a sparse and a dense row in one group, so the
ratio table pairs them as for the CPU suites, with real and dense-equivalent
GFLOP/s and GB/s. Issue 7's targets on an H100: batch-1 SpMV on VGG fc6 at 4 %
moves its bytes at >= 50 % of the device's memory bandwidth and runs >= 5x
faster than cuBLAS sgemv; SpMM at batch 64 at <= 10 % density beats the dense
product (the issue names cuSPARSE; cuBLAS sgemm is the baseline measured here).

The device's peak bandwidth comes from SPARSENET_BENCH_DEVICE_GBPS, else from
the table below by device name.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import benchlib
import sparsenet
from sparsenet import _core
from sparsenet.models import random_pruned_weight

pytestmark = pytest.mark.skipif(not sparsenet.cuda_available(), reason="needs a CUDA device and a CUDA build")

REPEATS = 200
# Peak DRAM bandwidth in GB/s by device-name fragment (vendor data sheets).
PEAK_GBPS = (("H200", 4800.0), ("H100 SXM", 3350.0), ("H100 80GB HBM3", 3350.0), ("H100 PCIe", 2000.0),
             ("H100", 3350.0), ("A100-SXM4-80GB", 2039.0), ("A100 80GB PCIe", 1935.0), ("A100", 1555.0),
             ("L4", 300.0), ("RTX 4090", 1008.0))

# (name, rows, cols): VGG-16 fc6 and fc7, as weight (out, in).
FC6 = ("fc6", 4096, 25088)
FC7 = ("fc7", 4096, 4096)
SPMV_CASES = [(FC6, 0.04), (FC6, 0.10), (FC7, 0.04)]
SPMM_CASES = [(FC6, 0.10), (FC6, 0.05), (FC7, 0.10), (FC7, 0.05)]


def device_peak_gbps() -> float | None:
    override = os.environ.get("SPARSENET_BENCH_DEVICE_GBPS")
    if override:
        return float(override)
    name = _core.cuda_device()
    return next((gbps for fragment, gbps in PEAK_GBPS if fragment in name), None)


def measure(config, *, layer, rows, cols, density, batch, backend, seed=7) -> dict:
    weight = random_pruned_weight((rows, cols), density, np.random.default_rng(seed), context=layer)
    nnz = int(weight.indptr[-1])
    if backend == "sparse":
        median = _core._cuda_time_csr(rows, cols, weight.indptr.astype(np.int64), weight.indices.astype(np.int64),
                                      weight.data, batch, REPEATS)
        weight_bytes = benchlib.csr_engine_bytes(rows, cols, nnz)
    else:
        median = _core._cuda_time_dense(rows, cols, batch, REPEATS)
        weight_bytes = rows * cols * 4
    cost = {"nnz": nnz, "dense_params": rows * cols, "flop_real": 2 * nnz * batch,
            "flop_dense_equivalent": 2 * rows * cols * batch, "weight_bytes": weight_bytes,
            "bytes_moved": weight_bytes + 4 * batch * (rows + cols)}
    if backend == "dense":
        cost["flop_real"] = cost["flop_dense_equivalent"]
    info = {"kind": "linear", "case": f"{layer} {cols}->{rows} @ {benchlib.percent(density)}%", "device":
            _core.cuda_device(), "in_features": cols, "out_features": rows, "density": density, "batch": batch,
            "backend": backend, "timing": f"CUDA events, median of {REPEATS}", **cost, **benchlib.rates(cost, median)}
    peak = device_peak_gbps()
    if peak:
        info["bandwidth_fraction"] = info["gbytes_per_s"] / peak
    group = f"cuda {layer} {benchlib.percent(density)}% batch {batch}"
    benchlib.record(config, group, backend, median, info)
    return info


@pytest.mark.parametrize("backend", ["sparse", "dense"])
@pytest.mark.parametrize("case", SPMV_CASES, ids=lambda c: f"{c[0][0]}-{benchlib.percent(c[1])}pct")
def test_cuda_spmv_batch1(request, case, backend):
    (layer, rows, cols), density = case
    info = measure(request.config, layer=layer, rows=rows, cols=cols, density=density, batch=1, backend=backend)
    fraction = info.get("bandwidth_fraction")
    print(f"\n{info['case']} {backend}: {info['median_s'] * 1e6:.1f} us, {info['gbytes_per_s']:.0f} GB/s"
          + (f" ({100 * fraction:.0f} % of peak)" if fraction else ""))


@pytest.mark.parametrize("backend", ["sparse", "dense"])
@pytest.mark.parametrize("case", SPMM_CASES, ids=lambda c: f"{c[0][0]}-{benchlib.percent(c[1])}pct")
def test_cuda_spmm_batch64(request, case, backend):
    (layer, rows, cols), density = case
    info = measure(request.config, layer=layer, rows=rows, cols=cols, density=density, batch=64, backend=backend)
    print(f"\n{info['case']} batch 64 {backend}: {info['median_s'] * 1e6:.1f} us, "
          f"{info['gflops_real']:.0f} GFLOP/s real, {info['gflops_dense_equivalent']:.0f} dense-equivalent")
