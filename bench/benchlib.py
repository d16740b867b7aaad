"""Shared pieces of the benchmark suite: the case lists, the model cache, the
FLOP and byte accounting, the timing loop and the sparse/dense ratio table.

Every case is measured twice, once per backend, on the same weights; the two
land in one pytest-benchmark group so that the ratio of their medians is the
number that matters (absolute times on a shared machine mean little).
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pytest

import sparsenet
from sparsenet._timing import median_seconds
from sparsenet.models import VGG16, random_pruned_weight

BACKENDS = ("sparse", "dense")
BATCHES = (1, 64)

# Fully connected shapes as (in_features, out_features), the "784->300" order.
FC_SHAPES = ((784, 300), (800, 500), (3136, 1024), (4096, 4096), (25088, 4096), (4096, 1000))
FC_DENSITIES = (1.0, 0.5, 0.3, 0.1, 0.05, 0.02)

# Timing: a round is at least this long (tiny calls are repeated inside a round,
# so the timer's own cost stays well below 1 %), and no case runs more rounds
# than this, whatever --benchmark-max-time allows.
MIN_ROUND_SECONDS = 20e-6
MAX_ROUNDS = 2000

# Scaling (opt-in, --scaling): batch 8 and 256 beside the default 1 and 64 on the
# two big FC shapes at 10 % and 5 %, and a density sweep (0-95 % pruned) of the
# "auto" backend against dense on 4096x4096 and one VGG-16 convolution.
SCALING_FC_SHAPES = ((4096, 4096), (25088, 4096))
SCALING_FC_DENSITIES = (0.1, 0.05)
SCALING_EXTRA_BATCHES = (8, 256)
SWEEP_DENSITIES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05)
SWEEP_CONV_LAYER = "conv4_2"  # 512x512 3x3 @28: the middle of VGG-16's conv cost
SWEEP_BACKENDS = ("auto", "sparse", "dense")

LARGE_REASON = ("batch-64 convolution and VGG-16 cases take minutes on a few cores: "
                "opt in with --large-batches or SPARSENET_BENCH_LARGE=1")


def percent(density: float) -> str:
    return f"{round(100 * density, 1):g}"


# ----------------------------------------------------------------------- cases
@dataclass(frozen=True)
class LayerCase:
    """One weighted layer at one density; batch and backend are separate parameters."""

    kind: str                   # "fc" or "conv"
    name: str                   # "4096x4096" (in x out) or "conv3_1"
    weight_shape: tuple         # (out, in) or (O, I, kh, kw)
    sample_shape: tuple         # one input sample: (in,) or (C, H, W)
    density: float
    padding: int = 0

    @property
    def key(self) -> tuple:
        return (self.kind, self.weight_shape, self.sample_shape, self.density, self.padding)

    def describe(self) -> str:
        if self.kind == "fc":
            return f"fc {self.name}"
        out_channels, in_channels, kh, kw = self.weight_shape
        return f"conv {self.name} {in_channels}x{out_channels} {kh}x{kw} @{self.sample_shape[1]}"

    def group(self, batch: int) -> str:
        return f"{self.describe()} d{percent(self.density)}% b{batch}"

    def case_id(self, batch: int, backend: str) -> str:
        return f"{self.kind}-{self.name}-d{percent(self.density)}-b{batch}-{backend}"

    def build_weights(self) -> tuple[sparsenet.SparseWeight, np.ndarray]:
        # Seeded by the case, so a rerun (or a -k subset) measures the same weights.
        rng = np.random.default_rng([*self.weight_shape, round(self.density * 1000)])
        weight = random_pruned_weight(self.weight_shape, self.density, rng, context=f"bench {self.describe()}")
        bias = (rng.standard_normal(self.weight_shape[0]) * 0.01).astype(np.float32)
        return weight, bias

    def build_model(self, weights: tuple[sparsenet.SparseWeight, np.ndarray], backend: str) -> sparsenet.Model:
        weight, bias = weights
        if self.kind == "fc":
            layer = sparsenet.Linear(weight, bias)
        else:
            layer = sparsenet.Conv2d(weight, bias, padding=self.padding)
        return sparsenet.Model([layer], backend=backend)


def fc_cases() -> list[LayerCase]:
    """Six shapes x six densities, then VGG-16's three FC layers at Han et al.'s
    densities (fc6 and fc7 4 %, fc8 23 %), named by shape like the others."""
    cases = [LayerCase("fc", f"{fin}x{fout}", (fout, fin), (fin,), density)
             for fin, fout in FC_SHAPES for density in FC_DENSITIES]
    for spec in VGG16.weighted():
        if spec.kind == "linear":
            fout, fin = spec.weight_shape
            cases.append(LayerCase("fc", f"{fin}x{fout}", (fout, fin), (fin,), VGG16.han_densities[spec.name]))
    return cases


def vgg16_conv_cases() -> list[LayerCase]:
    """The 13 VGG-16 convolutions at Han et al.'s densities, read from
    ``sparsenet.models.VGG16`` so the bench measures what the model runs."""
    cases = []
    for spec in VGG16.weighted():
        if spec.kind != "conv2d":
            continue
        block = int(spec.name[len("conv"):].split("_")[0])
        size = 224 >> (block - 1)  # each block ends in a 2x2 pool
        cases.append(LayerCase("conv", spec.name, spec.weight_shape, (spec.weight_shape[1], size, size),
                               VGG16.han_densities[spec.name], spec.padding))
    return cases


@dataclass(frozen=True)
class Network:
    """One end-to-end case: a built-in architecture at its default (Han et al.'s)
    densities, or at one uniform density; the same seed for every backend and peer."""
    arch: str
    batches: tuple            # run by default
    large_batches: tuple = ()  # behind --large-batches
    density: float | None = None

    @property
    def name(self) -> str:
        return self.arch if self.density is None else f"{self.arch} d{percent(self.density)}%"

    def case_id(self, batch: int, engine: str) -> str:
        tag = "" if self.density is None else f"-d{percent(self.density)}"
        return f"e2e-{self.arch}{tag}-b{batch}-{engine}"

    def group(self, batch: int) -> str:
        return f"e2e {self.name} b{batch}"

    def build(self, backend: str) -> sparsenet.Model:
        return getattr(sparsenet.models, self.arch)(densities=self.density, backend=backend)


# LeNet-5 and mnist_cnn at batch 1 and 64, VGG-16 at Han's densities at batch 1,
# and VGG-16 pruned to 10 % everywhere (the ">= 3x at 10 % uniform").
NETWORKS = (Network("lenet5", (1, 64)), Network("mnist_cnn", (1, 64)), Network("vgg16", (1,), (64,)),
            Network("vgg16", (1,), (64,), density=0.1))


def scaling_fc_cases() -> list[LayerCase]:
    return [LayerCase("fc", f"{fin}x{fout}", (fout, fin), (fin,), density)
            for fin, fout in SCALING_FC_SHAPES for density in SCALING_FC_DENSITIES]


def sweep_cases() -> list[LayerCase]:
    """Density sweep for backend="auto": 4096x4096 and one VGG-16 convolution,
    named ``sweep-...`` so they never collide with the default cases' ids."""
    conv = next(c for c in vgg16_conv_cases() if c.name == SWEEP_CONV_LAYER)
    cases = [LayerCase("fc", "4096x4096", (4096, 4096), (4096,), d) for d in SWEEP_DENSITIES]
    cases += [LayerCase("conv", conv.name, conv.weight_shape, conv.sample_shape, d, conv.padding)
              for d in SWEEP_DENSITIES]
    return cases


def layer_params(cases: Iterable[LayerCase], batches: Sequence[int], large_batches: Sequence[int] = (),
                 backends: Sequence[str] = BACKENDS) -> list:
    """pytest params in run order: case, then batch, then backend, so the cache
    below builds each case's weights once and sparse/dense run back to back."""
    params = []
    for case in cases:
        for batch in (*batches, *large_batches):
            marks = [pytest.mark.large] if batch in large_batches else []
            for backend in backends:
                params.append(pytest.param(case, batch, backend, id=case.case_id(batch, backend), marks=marks))
    return params


# ----------------------------------------------------------------------- cache
class ModelCache:
    """Weights and models of the most recent case only.

    Tests run case by case (see ``layer_params``), so one entry is enough to build
    every case once, and it bounds memory: 25088x4096 at 100 % is about 3 GB
    (int64 indices on the Python side, the CSR copy, the dense copy).
    """

    def __init__(self) -> None:
        self._key: Any = None
        self._shared: Any = None
        self._models: dict[str, Any] = {}

    def get(self, key: Any, backend: str, make_shared: Callable[[], Any],
            make_model: Callable[[Any, str], Any]) -> Any:
        if key != self._key:
            self._key, self._shared, self._models = None, None, {}
            gc.collect()  # free the previous case before allocating the next
            self._shared = make_shared()
            self._key = key
        if backend not in self._models:
            self._models[backend] = make_model(self._shared, backend)
        return self._models[backend]


def make_input(sample_shape: Sequence[int], batch: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    return rng.standard_normal((batch, *sample_shape), dtype=np.float32)


# ------------------------------------------------------------------ accounting
def csr_engine_bytes(rows: int, cols: int, nnz: int) -> int:
    """Bytes of a CSR weight as the engine holds it (csrc/src/csr.cc): float32
    values, uint16 column indices when cols <= 65536 else uint32, uint32 row pointers."""
    index_bytes = 2 if cols <= 65536 else 4
    return nnz * (4 + index_bytes) + (rows + 1) * 4


def model_cost(model: sparsenet.Model, sample_shape: Sequence[int], batch: int) -> dict:
    """FLOPs and bytes of one forward call, summed over the weighted layers.

    real FLOPs = 2 * nnz * batch * spatial, dense-equivalent = 2 * rows * cols *
    batch * spatial (spatial = output pixels of a convolution, 1 for Linear).
    Bytes = each weighted layer's weight as its backend stores it, plus its input
    and output activations; bias, im2col scratch and pooling traffic are not counted.
    """
    shape = tuple(int(d) for d in sample_shape)
    flop_real = flop_dense = weight_bytes = activation_bytes = 0
    nnz = dense_params = 0
    # The engine's own shape inference, so the counts follow what actually runs.
    for layer, core in zip(model.layers, model._core_layers):
        out_shape = tuple(core.output_shape(list(shape)))
        if isinstance(layer, (sparsenet.Linear, sparsenet.Conv2d)):
            rows, cols, layer_nnz = layer.weight.rows, layer.weight.cols, layer.nnz
            spatial = int(np.prod(out_shape[1:])) if isinstance(layer, sparsenet.Conv2d) else 1
            flop_real += 2 * layer_nnz * batch * spatial
            flop_dense += 2 * rows * cols * batch * spatial
            weight_bytes += rows * cols * 4 if layer.backend == "dense" else csr_engine_bytes(rows, cols, layer_nnz)
            activation_bytes += 4 * batch * (int(np.prod(shape)) + int(np.prod(out_shape)))
            nnz += layer_nnz
            dense_params += rows * cols
        shape = out_shape
    return {
        "nnz": nnz,
        "dense_params": dense_params,
        "flop_real": flop_real,
        "flop_dense_equivalent": flop_dense,
        "weight_bytes": weight_bytes,
        "bytes_moved": weight_bytes + activation_bytes,
        "output_shape": list(shape),
    }


# ---------------------------------------------------------------------- timing
def _time_call(function: Callable, x: np.ndarray) -> float:
    start = time.perf_counter()
    function(x)
    return time.perf_counter() - start


def plan_rounds(seconds_per_call: float, max_time: float, min_rounds: int) -> tuple[int, int]:
    """(rounds, iterations): enough rounds to fill ``max_time`` (at least
    ``min_rounds``, at most MAX_ROUNDS); tiny calls repeated within a round."""
    iterations = max(1, math.ceil(MIN_ROUND_SECONDS / max(seconds_per_call, 1e-9)))
    round_seconds = seconds_per_call * iterations
    rounds = max(min_rounds, min(MAX_ROUNDS, math.ceil(max_time / round_seconds)))
    return rounds, iterations


def run_case(benchmark: Any, config: pytest.Config, model: sparsenet.Model, x: np.ndarray, *, group: str,
             backend: str, info: dict) -> None:
    """Time ``model(x)`` and record what the ratio table and the JSON need."""
    benchmark.group = group
    forward = model.forward
    rounds = iterations = 1
    if benchmark.enabled:
        forward(x)  # warm-up: buffer first-touch, thread pool and BLAS threads awake
        estimate = _time_call(forward, x)
        if estimate < 1e-3:  # cheap to re-check, and one call may have hit a hiccup
            estimate = min(estimate, *(_time_call(forward, x) for _ in range(5)))
        rounds, iterations = plan_rounds(estimate, float(config.getoption("benchmark_max_time")),
                                         int(config.getoption("benchmark_min_rounds")))
    benchmark.pedantic(forward, args=(x,), rounds=rounds, iterations=iterations, warmup_rounds=0)

    batch = x.shape[0]
    cost = model_cost(model, x.shape[1:], batch)
    extra = benchmark.extra_info
    extra.update(info)
    extra.update(backend=backend, batch=batch, input_shape=list(x.shape[1:]), threads=sparsenet.get_num_threads(),
                 isa=sparsenet.kernel_info()["isa"], rounds=rounds, iterations=iterations, **cost)
    extra["density_actual"] = cost["nnz"] / max(1, cost["dense_params"])
    if backend == "auto":  # what auto measured fastest, per weighted layer
        extra["choices"] = {layer.name: sorted(set(layer.choices.values()))
                            for layer in model.layers if getattr(layer, "choices", None)}
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    median = benchmark.stats.stats.median
    extra.update(rates(cost, median))
    record(config, group, backend, median, dict(extra))


def peer_threads(config: pytest.Config) -> int:
    """Threads for peer engines: --threads / SPARSENET_BENCH_THREADS, else the
    engine's own count (which follows SPARSENET_NUM_THREADS or every core)."""
    threads = config.getoption("threads")
    if threads is None:
        import os
        threads = int(os.environ.get("SPARSENET_BENCH_THREADS") or 0) or sparsenet.get_num_threads()
    return threads


def run_peer_case(benchmark: Any, config: pytest.Config, runner: Any, reference: sparsenet.Model, x: np.ndarray, *,
                  group: str, engine: str, info: dict) -> None:
    """Time a peer engine's ``runner.forward(x)`` with the same loop as ``run_case``;
    FLOPs come from the sparsenet reference model with the same weights, bytes
    from the weights as the peer stores them."""
    import peers  # bench/peers.py; imported here so benchlib itself needs no peer

    benchmark.group = group
    forward = runner.forward
    rounds = iterations = 1
    if benchmark.enabled:
        forward(x)
        estimate = _time_call(forward, x)
        if estimate < 1e-3:
            estimate = min(estimate, *(_time_call(forward, x) for _ in range(5)))
        rounds, iterations = plan_rounds(estimate, float(config.getoption("benchmark_max_time")),
                                         int(config.getoption("benchmark_min_rounds")))
    benchmark.pedantic(forward, args=(x,), rounds=rounds, iterations=iterations, warmup_rounds=0)

    batch = x.shape[0]
    cost = model_cost(reference, x.shape[1:], batch)
    ops = peers.ops_of(reference)
    peer_weight_bytes = peers.weight_bytes(engine, ops)
    cost["bytes_moved"] += peer_weight_bytes - cost["weight_bytes"]
    cost["weight_bytes"] = peer_weight_bytes
    if engine not in peers.SPARSE_ENGINES:  # dense peers execute every multiply-add
        cost["flop_real"] = cost["flop_dense_equivalent"]
    extra = benchmark.extra_info
    extra.update(info)
    extra.update(backend=engine, engine=engine, engine_version=peers.engine_version(engine), peer=True, batch=batch,
                 input_shape=list(x.shape[1:]), threads=peer_threads(config), rounds=rounds, iterations=iterations,
                 **cost)
    extra["density_actual"] = cost["nnz"] / max(1, cost["dense_params"])
    if benchmark.stats is None:
        return
    median = benchmark.stats.stats.median
    extra.update(rates(cost, median))
    config.stash.setdefault(PEER_RESULTS, []).append({"group": group, "backend": engine, "median": median,
                                                      "extra_info": dict(extra)})


def rates(cost: dict, median: float) -> dict:
    return {
        "median_s": median,
        "gflops_real": cost["flop_real"] / median / 1e9,
        "gflops_dense_equivalent": cost["flop_dense_equivalent"] / median / 1e9,
        "gbytes_per_s": cost["bytes_moved"] / median / 1e9,
    }


# --------------------------------------------------------------- machine probe
PROBE_BYTES = 256 << 20  # well past any last-level cache
PROBE_GEMM = 2048        # sgemm 2048x2048 times 2048x256 through sparsenet's dense backend


def machine_probe(threads: int, repeats: int = 7) -> dict:
    """What this machine can do at `threads` threads, for the report's percent
    columns: the read bandwidth of a streaming reduction (NumPy's SIMD int32 max
    over 256 MiB, split over `threads` Python threads: it releases the GIL), and
    the sgemm rate of the engine's own dense BLAS at batch 256. Medians of
    `repeats`; about a second in all."""
    from concurrent.futures import ThreadPoolExecutor

    data = np.ones(PROBE_BYTES // 4, np.int32)
    parts = np.array_split(data, threads)
    with ThreadPoolExecutor(threads) as pool:
        read = median_seconds(lambda _: list(pool.map(np.max, parts)), None, 0.0, repeats, repeats)

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((PROBE_GEMM, PROBE_GEMM)).astype(np.float32)
    x = rng.standard_normal((256, PROBE_GEMM)).astype(np.float32)
    previous = sparsenet.get_num_threads()
    sparsenet.set_num_threads(threads)
    try:
        model = sparsenet.Model([sparsenet.Linear(weight)], backend="dense")
        gemm = median_seconds(model, x, 0.0, repeats, repeats)
    finally:
        sparsenet.set_num_threads(previous)
    return {"threads": threads, "read_gbytes_per_s": PROBE_BYTES / read / 1e9,
            "sgemm_gflops": 2.0 * PROBE_GEMM * PROBE_GEMM * 256 / gemm / 1e9}


# ----------------------------------------------------------------- ratio table
RESULTS = pytest.StashKey[list]()
PEER_RESULTS = pytest.StashKey[list]()


def record(config: pytest.Config, group: str, backend: str, median: float, info: dict) -> None:
    config.stash.setdefault(RESULTS, []).append({"group": group, "backend": backend, "median": median,
                                                 "extra_info": info})


def pair_up(records: Iterable[dict]) -> list[dict]:
    """One row per group, in run order: both medians and the speedup."""
    rows: dict[str, dict] = {}
    for rec in records:
        row = rows.setdefault(rec["group"], {"group": rec["group"]})
        row[rec["backend"]] = rec
    for row in rows.values():
        if "sparse" in row and "dense" in row:
            row["speedup"] = row["dense"]["median"] / row["sparse"]["median"]
    return list(rows.values())


def _format_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale or unit == "us":
            return f"{seconds / scale:#.3g} {unit}" if seconds / scale < 100 else f"{seconds / scale:.0f} {unit}"
    return f"{seconds:.3g} s"


def ratio_table(rows: Sequence[dict]) -> list[str]:
    """The table printed at the end of a run (and stored in the JSON)."""
    header = ("case", "nnz", "sparse", "dense", "speedup", "sparse GFLOP/s", "dense-eq", "dense GFLOP/s",
              "sparse GB/s", "dense GB/s")
    lines = [header]

    def cell(row: dict, backend: str, field: str, form: str = "{:.1f}") -> str:
        rec = row.get(backend)
        return form.format(rec["extra_info"][field]) if rec else "-"

    for row in rows:
        any_rec = row.get("sparse") or row.get("dense")
        lines.append((
            row["group"],
            f"{any_rec['extra_info']['nnz']:,}",
            _format_time(row["sparse"]["median"]) if "sparse" in row else "-",
            _format_time(row["dense"]["median"]) if "dense" in row else "-",
            f"{row['speedup']:.2f}x" if "speedup" in row else "-",
            cell(row, "sparse", "gflops_real"),
            cell(row, "sparse", "gflops_dense_equivalent"),
            cell(row, "dense", "gflops_dense_equivalent"),
            cell(row, "sparse", "gbytes_per_s"),
            cell(row, "dense", "gbytes_per_s"),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return out
