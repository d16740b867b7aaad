#!/usr/bin/env python
"""Turn pytest-benchmark JSON files from the sparsenet suite (and the peer runs
of ``bench/run_peers.py``) into ``docs/performance.md`` and plots under ``docs/img/``.

    PYTHONPATH=python python bench/report.py bench-results/*.json
    PYTHONPATH=python python bench/report.py results.json --out docs/performance.md --img-dir docs/img

Medians are matched by pytest-benchmark group (case, density, batch) and thread
count; where several files hold the same cell (``run_peers.py --rounds``), the
fastest of their medians is kept. Every ratio is *engine median / sparsenet sparse median*: above 1
sparsenet's sparse path is faster. Compare ratios within one set of runs only:
on a shared machine the same cell differs by up to 1.4x between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

SPARSE, DENSE, AUTO = "sparsenet sparse", "sparsenet dense", "sparsenet auto"
# Column order in the tables.
ENGINE_ORDER = (SPARSE, AUTO, DENSE, "onnxruntime", "torch", "torch-csr", "mkl", "scipy")
DENSE_ENGINES = (DENSE, "onnxruntime", "torch")
SPARSE_PEERS = ("mkl", "torch-csr", "scipy")
SINGLE_THREADED = ("scipy",)  # measured at 1 thread, shown at every thread count
GROUP_RE = re.compile(r"^(?P<sweep>sweep )?(?P<kind>fc|conv|e2e) (?P<name>.*?)(?: d(?P<density>[\d.]+)%)? b(?P<batch>\d+)$")


# ------------------------------------------------------------------ loading
class Result:
    def __init__(self, bench: dict, source: str):
        info = bench.get("extra_info", {})
        self.group: str = bench["group"]
        backend = info.get("backend", "?")
        self.engine: str = info.get("engine") or f"sparsenet {backend}"
        self.threads: int = int(info.get("threads", 0))
        self.median: float = float(bench["stats"]["median"])
        self.info = info
        self.source = source
        match = GROUP_RE.match(self.group)
        self.sweep = bool(match and match["sweep"])
        self.kind = match["kind"] if match else "?"
        self.name = match["name"] if match else self.group
        self.density = float(match["density"]) if match and match["density"] else None
        self.batch = int(match["batch"]) if match else int(info.get("batch", 0))


def load(paths: list[Path]) -> tuple[list[Result], list[dict]]:
    results, machines = [], []
    for path in paths:
        data = json.loads(path.read_text())
        if "benchmarks" not in data:
            continue  # runs.json and the like
        machines.append({"path": str(path), "datetime": data.get("datetime"), **data.get("machine_info", {})})
        results += [Result(b, str(path)) for b in data["benchmarks"] if b.get("stats")]
    return results, machines


class Table:
    """(group, threads) -> engine -> Result. A cell measured in several runs keeps
    its fastest median: the host slows down in phases lasting minutes, and which
    engine's process meets a slow phase is luck (runs counts the medians pooled)."""

    def __init__(self, results: list[Result]):
        self.cells: dict[tuple[str, int], dict[str, Result]] = defaultdict(dict)
        self.runs: dict[tuple[str, int, str], int] = defaultdict(int)
        self.threads = sorted({r.threads for r in results if r.engine not in SINGLE_THREADED}) or [1]
        for r in results:
            row = self.cells[(r.group, r.threads)]
            self.runs[(r.group, r.threads, r.engine)] += 1
            if r.engine not in row or r.median < row[r.engine].median:
                row[r.engine] = r
        # one Result per (group, threads, engine), the kept one, in input order
        self.results = list(dict.fromkeys(self.cells[(r.group, r.threads)][r.engine] for r in results))
        # single-threaded engines: show their 1-thread time at every thread count
        for (group, threads), row in list(self.cells.items()):
            for engine in SINGLE_THREADED:
                if engine in row:
                    for t in self.threads:
                        self.cells[(group, t)].setdefault(engine, row[engine])
        self.groups = list(dict.fromkeys(r.group for r in results))
        self.engines = [e for e in ENGINE_ORDER if any(e == r.engine for r in results)]
        self.engines += sorted({r.engine for r in results} - set(self.engines))

    def row(self, group: str, threads: int) -> dict[str, Result]:
        return self.cells.get((group, threads), {})


# ---------------------------------------------------------------- formatting
def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale or unit == "µs":
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{seconds:.3g} s"


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def best(row: dict[str, Result], engines) -> tuple[str, Result] | None:
    found = [(e, row[e]) for e in engines if e in row]
    return min(found, key=lambda er: er[1].median) if found else None


def case_label(r: Result) -> str:
    density = f" d{r.density:g}%" if r.density is not None else ""
    return f"{r.kind} {r.name}{density} b{r.batch}"


def probes_by_source(machines: list[dict]) -> dict[str, dict]:
    """The machine probe of each sparsenet run (benchlib.machine_probe), by JSON file:
    each result is set against the probe of the run that measured it."""
    return {m["path"]: m["sparsenet"]["probe"] for m in machines if (m.get("sparsenet") or {}).get("probe")}


def comparison_table(table: Table, groups: list[str], extra: str | None = None,
                     probes: dict[str, dict] | None = None, base: str = SPARSE) -> list[str]:
    """One row per (group, threads): every engine's median with its ratio to
    sparsenet sparse, then the best dense and best sparse peer ratios; with
    `probes`, the sparse GB/s and GFLOP/s also as a percent of what the machine
    probe measured at that thread count (read bandwidth, sgemm rate)."""
    probes = probes or {}
    short = base.replace("sparsenet ", "")  # the ratios are to this engine (sparse, or auto end to end)
    # only the engines that ran some case of this table (the sparse peers run no convolution)
    engines = [e for e in table.engines if any(e in table.row(g, t) for g in groups for t in table.threads)]
    header = ["case", "thr"] + engines + [f"best dense / {short}", f"best sparse peer / {short}"]
    if extra == "gbs":
        header.append("sparse GB/s (% of read bandwidth)" if probes else "sparse GB/s")
    elif extra == "gflops":
        header += ["sparse GFLOP/s (real" + (", % of sgemm)" if probes else ")"), "best dense GFLOP/s"]
    rows = []
    for group in groups:
        for threads in table.threads:
            row = table.row(group, threads)
            if not row:
                continue
            sparse = row.get(SPARSE)
            reference = row.get(base)
            cells = [case_label(next(iter(row.values()))), str(threads)]
            for engine in engines:
                r = row.get(engine)
                if r is None:
                    cells.append("-")
                elif reference is None or engine == base:
                    cells.append(fmt_time(r.median))
                else:
                    cells.append(f"{fmt_time(r.median)} ({r.median / reference.median:.2f}x)")
            dense = best(row, DENSE_ENGINES)
            peer = best(row, SPARSE_PEERS)
            cells.append(f"{fmt_ratio(dense[1].median / reference.median)} ({dense[0]})"
                         if dense and reference else "-")
            cells.append(f"{fmt_ratio(peer[1].median / reference.median)} ({peer[0]})"
                         if peer and reference else "-")
            probe = probes.get(sparse.source) if sparse else None
            if extra == "gbs":
                gbs = sparse.info.get("gbytes_per_s", 0) if sparse else None
                share = f" ({100 * gbs / probe['read_gbytes_per_s']:.0f} %)" if probe and gbs else ""
                cells.append(f"{gbs:.1f}{share}" if sparse else "-")
            elif extra == "gflops":
                flops = sparse.info.get("gflops_real", 0) if sparse else None
                share = f" ({100 * flops / probe['sgemm_gflops']:.0f} %)" if probe and flops else ""
                cells.append(f"{flops:.1f}{share}" if sparse else "-")
                cells.append(f"{dense[1].info.get('gflops_dense_equivalent', 0):.1f} ({dense[0]})" if dense else "-")
            rows.append(cells)
    return md_table(header, rows) if rows else ["_No cases of this kind in the input files._"]


# ---------------------------------------------------------------- sections
def by_kind(results: list[Result], kind: str, *, batch: int | None = None, sweep: bool = False,
            batches: tuple = ()) -> list[str]:
    return list(dict.fromkeys(r.group for r in results if r.kind == kind and r.sweep == sweep
                              and (batch is None or r.batch == batch) and (not batches or r.batch in batches)))


def sweep_section(table: Table, results: list[Result]) -> list[str]:
    sweeps = [r for r in results if r.sweep]
    if not sweeps:
        return ["_No density-sweep cases in the input files (run with `--scaling`)._"]
    lines = []
    families = list(dict.fromkeys((r.kind, r.name, r.batch) for r in sweeps))
    for kind, name, batch in families:
        groups = sorted({r.group for r in sweeps if (r.kind, r.name, r.batch) == (kind, name, batch)},
                        key=lambda g: -next(r.density for r in sweeps if r.group == g))
        for threads in table.threads:
            rows, crossover = [], None
            for group in groups:
                row = table.row(group, threads)
                if not row:
                    continue
                any_r = next(iter(row.values()))
                auto, sparse, dense = row.get(AUTO), row.get(SPARSE), row.get(DENSE)
                pruned = 100 - any_r.density
                if sparse and dense and sparse.median < dense.median and crossover is None:
                    crossover = any_r.density
                choice = ",".join(sorted(set(auto.info.get("auto_choices", {}).values()))) if auto else ""
                rows.append([f"{pruned:g} %", f"{any_r.density:g} %",
                             fmt_time(auto.median) if auto else "-", fmt_time(sparse.median) if sparse else "-",
                             fmt_time(dense.median) if dense else "-",
                             fmt_ratio(auto.median / dense.median) if auto and dense else "-",
                             fmt_ratio(dense.median / sparse.median) if sparse and dense else "-", choice or "-"])
            if not rows:
                continue
            lines += [f"**{kind} {name}, batch {batch}, {threads} thread(s)** — sparse beats dense from "
                      + (f"{crossover:g} % density down (crossover)" if crossover is not None else "no density measured")
                      + ":", ""]
            lines += md_table(["pruned", "density", "auto", "sparse", "dense", "auto / dense (≤ 1 wanted)",
                               "dense / sparse", "auto chose"], rows)
            lines.append("")
    return lines


def scaling_section(table: Table, results: list[Result]) -> list[str]:
    fc = [r for r in results if r.kind == "fc" and not r.sweep and r.name in ("4096x4096", "25088x4096")
          and r.density in (10.0, 5.0)]
    if not fc:
        return ["_No FC scaling cases in the input files._"]
    families = sorted({(r.name, r.density) for r in fc}, key=lambda f: (f[0] != "4096x4096", -f[1]))
    batches = sorted({r.batch for r in fc})
    header = ["layer", "density", "thr", "batch", "sparse", "per sample", "dense / sparse",
              "best dense peer / sparse", "best sparse peer / sparse"]
    rows = []
    for name, density in families:
        for threads in table.threads:
            for b in batches:
                row = table.row(f"fc {name} d{density:g}% b{b}", threads)
                if not row:
                    continue
                sparse, dense = row.get(SPARSE), row.get(DENSE)
                dense_peer = best(row, ("onnxruntime", "torch"))
                sparse_peer = best(row, SPARSE_PEERS)
                rows.append([name, f"{density:g} %", str(threads), str(b),
                             fmt_time(sparse.median) if sparse else "-",
                             fmt_time(sparse.median / b) if sparse else "-",
                             fmt_ratio(dense.median / sparse.median) if sparse and dense else "-",
                             f"{fmt_ratio(dense_peer[1].median / sparse.median)} ({dense_peer[0]})"
                             if dense_peer and sparse else "-",
                             f"{fmt_ratio(sparse_peer[1].median / sparse.median)} ({sparse_peer[0]})"
                             if sparse_peer and sparse else "-"])
    return md_table(header, rows)


# ------------------------------------------------------------------ plots
def plots(table: Table, results: list[Result], img_dir: Path, link_prefix: str) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["_matplotlib is not installed: no plots (pip install 'sparsenet[peers]')._"]
    img_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    styles = {SPARSE: ("tab:blue", "o"), AUTO: ("tab:green", "s"), DENSE: ("tab:orange", "^"),
              "onnxruntime": ("tab:red", "v"), "torch": ("tab:purple", "D"), "torch-csr": ("tab:brown", "x"),
              "mkl": ("tab:pink", "P"), "scipy": ("tab:gray", "*")}
    dash = {1: "-", 2: "--", 4: ":", 8: "-."}

    # time vs density: the sweeps, dense peers as flat lines (their time does not depend on density)
    sweeps = [r for r in results if r.sweep]
    for kind, name, batch in dict.fromkeys((r.kind, r.name, r.batch) for r in sweeps):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for threads in table.threads:
            for engine in (SPARSE, AUTO, DENSE):
                pts = sorted((r.density, r.median) for r in sweeps if (r.kind, r.name, r.batch) == (kind, name, batch)
                             and r.engine == engine and r.threads == threads)
                if pts:
                    color, marker = styles[engine]
                    ax.plot([100 - d for d, _ in pts], [m * 1e3 for _, m in pts], dash.get(threads, "-"),
                            color=color, marker=marker, ms=4, label=f"{engine}, {threads} thr")
            for engine in ("onnxruntime", "torch"):
                peer = [r.median for r in results if r.engine == engine and r.threads == threads and not r.sweep
                        and r.kind == kind and r.name.split(" ")[0] == name and r.batch == batch]
                if peer:
                    color, _ = styles[engine]
                    ax.axhline(min(peer) * 1e3, color=color, ls=dash.get(threads, "-"), lw=1,
                               label=f"{engine} (dense), {threads} thr")
        ax.set_yscale("log")
        ax.set_xlabel("pruned (%)  —  density = 100 - pruned")
        ax.set_ylabel("median time per call (ms, log)")
        ax.set_title(f"{kind} {name}, batch {batch}: time vs pruning")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        file = f"density_{kind}_{name}_b{batch}.png".replace(" ", "_")
        fig.savefig(img_dir / file, dpi=110)
        plt.close(fig)
        lines += [f"![{kind} {name} batch {batch}: time vs density]({link_prefix}{file})", ""]

    # time per sample vs batch size: FC 4096x4096 and 25088x4096 at 10 % and 5 %
    fc = [r for r in results if r.kind == "fc" and not r.sweep and r.name in ("4096x4096", "25088x4096")
          and r.density in (10.0, 5.0)]
    for name in dict.fromkeys(r.name for r in fc):
        densities = sorted({r.density for r in fc if r.name == name}, reverse=True)
        fig, axes = plt.subplots(1, len(densities), figsize=(5.2 * len(densities), 4.2), squeeze=False)
        for ax, density in zip(axes[0], densities):
            for threads in table.threads:
                for engine in table.engines:
                    pts = sorted((r.batch, r.median) for r in fc if r.name == name and r.density == density
                                 and r.engine == engine and (r.threads == threads or
                                                             (engine in SINGLE_THREADED and threads == 1)))
                    if len(pts) >= 1 and engine in styles:
                        color, marker = styles[engine]
                        ax.plot([b for b, _ in pts], [m / b * 1e3 for b, m in pts], dash.get(threads, "-"),
                                color=color, marker=marker, ms=4, label=f"{engine}, {threads} thr")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ticks = sorted({r.batch for r in fc if r.name == name})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.set_xlabel("batch size")
            ax.set_ylabel("median time per sample (ms, log)")
            ax.set_title(f"fc {name}, density {density:g} %")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][-1].legend(fontsize=7, ncol=1, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        file = f"batch_fc_{name}.png"
        fig.savefig(img_dir / file, dpi=110, bbox_inches="tight")
        plt.close(fig)
        lines += [f"![fc {name}: time per sample vs batch size]({link_prefix}{file})", ""]
    return lines or ["_No sweep or batch-scaling cases in the input files: no plots._"]


# ---------------------------------------------------------------- machine
def machine_lines(machines: list[dict], results: list[Result]) -> list[str]:
    snet = next((m.get("sparsenet") for m in machines if m.get("sparsenet")), {}) or {}
    cpu = snet.get("cpu_model") or (machines[0].get("cpu", {}) or {}).get("brand_raw") if machines else None
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = set(re.search(r"^flags\s*:(.*)$", text, re.M)[1].split())
        flags = " ".join(f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni") if f in found)
    except (OSError, TypeError):
        pass
    dates = sorted(m["datetime"][:19].replace("T", " ") for m in machines if m.get("datetime"))
    loads = [m.get("sparsenet", {}).get("load_average_before_run") for m in machines]
    loads = [l[0] for l in loads if l]
    threads = sorted({r.threads for r in results})
    versions = {}
    for m in machines:
        versions.update((m.get("sparsenet") or {}).get("peers") or {})
    versions = {k: (re.search(r"Version ([\d.]+)", v)[1] if "Math Kernel Library Version" in v else v)
                for k, v in versions.items()}
    node = machines[0].get("node", "?") if machines else "?"
    lines = [
        f"- **Machine**: {cpu or 'unknown CPU'}; {os.cpu_count()} logical cores (host `{node}`); "
        f"CPU flags: {flags or 'unknown'} (report host)",
        f"- **sparsenet**: {snet.get('version', '?')}, kernels `{snet.get('isa', '?')}`, dense BLAS "
        f"{snet.get('blas', '?')}",
        "- **Peers**: " + (", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "none"),
        f"- **Threads**: {', '.join(map(str, threads))} (scipy.sparse is single-threaded: its 1-thread time is shown "
        f"in every thread row)",
        *probe_lines(probes_by_source(machines)),
        f"- **Date**: {dates[0] if dates else '?'}" + (f" to {dates[-1]}" if len(dates) > 1 else "") + " UTC"
        + (f"; load average before each run {min(loads):.2f}-{max(loads):.2f}" if loads else ""),
    ]
    return lines


def probe_lines(probes: dict[str, dict]) -> list[str]:
    if not probes:
        return []
    cells = "; ".join(f"{Path(path).parent.name}/{Path(path).name} ({p['threads']} thread{'s' if p['threads'] > 1 else ''}): read "
                      f"{p['read_gbytes_per_s']:.1f} GB/s, sgemm {p['sgemm_gflops']:.1f} GFLOP/s"
                      for path, p in sorted(probes.items()))
    return [f"- **Machine probe** (`benchlib.machine_probe`, at the start of each sparsenet run): {cells}. Read "
            "bandwidth is a streaming SIMD reduction over 256 MiB (a stricter yardstick than a copy's read "
            "side); sgemm is sparsenet's dense backend (its BLAS) on 2048x2048 times 2048x256. The percent "
            "columns set each result against the probe of its own run.", ]


# ------------------------------------------------------------------- main
def build_report(paths: list[Path], out: Path, img_dir: Path, note: str | None, commands: str | None,
                 summary: str | None = None) -> str:
    results, machines = load(paths)
    if not results:
        raise SystemExit("report: no benchmark results in " + ", ".join(map(str, paths)))
    table = Table(results)
    results = table.results  # repeated runs pooled: every section and plot sees one result per cell
    probes = probes_by_source(machines)
    try:
        link_prefix = os.path.relpath(img_dir, out.parent).replace(os.sep, "/") + "/"
    except ValueError:
        link_prefix = str(img_dir) + "/"

    lines = ["# sparsenet performance", ""]
    if note:
        lines += [f"> **{note.strip()}**", ""]
    lines += machine_lines(machines, results) + [""]
    if summary:
        lines += [summary.strip("\n"), ""]
    pooled = max(table.runs.values(), default=1)
    lines += [
        ("Every cell is the median time of one forward call" if pooled == 1 else
         f"Every cell is the fastest of up to {pooled} medians of one forward call, one per run (`run_peers.py "
         f"--rounds {pooled}` runs every engine and thread count {pooled} times, the rounds one after the other, "
         "so that each engine meets the host's slow phases alike)")
        + " (NumPy in, NumPy out, each engine's Python API); "
        "the ratio in brackets is **that engine's median / sparsenet sparse median** (sparsenet auto's in the "
        "end-to-end table), so above 1 sparsenet wins. Every engine and thread count ran in its own process (`bench/run_peers.py`) on the same "
        "weights (same seeds). On a shared machine the same cell can differ by up to 1.4x between runs: "
        "read ratios, not absolute times, and only within one set of runs.",
        "",
        "Engines: `sparsenet sparse` / `dense` / `auto` are sparsenet's backends; `onnxruntime` runs a dense "
        "ONNX graph (Gemm / Conv / the whole network) built from the same weights; `torch` is dense "
        "`F.linear` / `F.conv2d` / the whole network; `torch-csr` is `torch.sparse_csr_tensor @ x`; `mkl` is "
        "MKL's inspector-executor (`mkl_sparse_s_mv` / `_mm` on a handle hinted and optimized once); `scipy` is "
        "`csr_matrix @ x`. The sparse peers run fully connected layers only.",
        "",
        "## 1. Batch-1 fully connected (SpMV)", "",
        "Target: at 10 % density ≥ 5x faster than the best dense engine on 4096x4096 and 25088x4096, ≥ 1.5x "
        "faster than MKL sparse; fc6 at 4 % ≥ 10x over dense; effective bandwidth ≥ 75 % of copy bandwidth "
        "for layers larger than the last-level cache (the sparse GB/s column counts weights as stored + input + "
        "output; the percent is of the probe's read bandwidth).", "",
        *comparison_table(table, by_kind(results, "fc", batch=1), extra="gbs", probes=probes), "",
        "## 2. Batched fully connected (SpMM), batch 64", "",
        "Target: at 10 % ≥ 3x faster than the fastest dense peer and ≥ 2x faster than MKL sparse; useful "
        "work ≥ 35 % of the dense sgemm FLOP rate.", "",
        *comparison_table(table, by_kind(results, "fc", batch=64), extra="gflops", probes=probes), "",
        "## 3. Sparse convolution (VGG-16 layers at Han et al.'s densities)", "",
        "Target: faster than the fastest dense convolution in every layer at ≤ 40 % density; ≥ 3x at 10 %. "
        "`sparsenet auto` is what a model runs: per layer the fastest of sparse direct convolution, the dense "
        "BLAS backend, dense direct and dense Winograd convolution, as measured at its first call; its ratio, "
        "like every other, is to `sparsenet sparse`.", "",
        *comparison_table(table, by_kind(results, "conv"), extra="gflops", probes=probes), "",
        "## 4. End to end", "",
        "Target: faster than every peer in every cell (batch 1 and 64, 1 and 2 threads); LeNet-5 batch 1 "
        "under 100 µs from Python. Ratios here are to `sparsenet auto`, the default backend (sparse or dense "
        "per layer, chosen by measurement); `sparse` forces CSR kernels on every layer, unpruned convolutions "
        "included.", "",
        *comparison_table(table, by_kind(results, "e2e"), base=AUTO), "",
        "## 5. Never worse than dense: `backend=\"auto\"` over a density sweep", "",
        "Target: at every pruning level from 0 % to 95 % auto is no slower than dense beyond noise "
        "(auto / dense ≤ about 1.05). The crossover is the highest density at which sparse beats dense.", "",
        *sweep_section(table, results),
        "## 6. Scaling with batch size and density", "",
        "Target: sparse still beats dense at batch 64 for ≤ 10 % density. Batch 8 and 256 come from "
        "`--scaling`.", "",
        *scaling_section(table, results), "",
        *plots(table, results, img_dir, link_prefix),
        "## Regenerating this report", "",
    ]
    lines += (commands or DEFAULT_COMMANDS).strip("\n").splitlines()
    lines += ["", f"Input files: {', '.join(sorted({Path(m['path']).parent.name + '/' + Path(m['path']).name for m in machines}))}.", ""]
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


DEFAULT_COMMANDS = """
From the repository root, with the extension built and the peers installed
(`pip install -e '.[peers]'`, and torch separately: see `bench/README.md`):

```sh
# every engine x thread count in its own process, twice, round after round (each cell keeps its
# faster median); the default cases plus the scaling ones
PYTHONPATH=python python bench/run_peers.py --threads 1,2 --scaling --rounds 2 --max-time 0.5 --out bench-results
# add --large-batches for batch-64 convolutions and VGG-16 at batch 64 (slow)
PYTHONPATH=python python bench/report.py bench-results/*.json --out docs/performance.md --img-dir docs/img
```
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", type=Path, help="pytest-benchmark JSON files (runs.json is ignored)")
    parser.add_argument("--out", type=Path, default=Path("docs/performance.md"))
    parser.add_argument("--img-dir", type=Path, default=Path("docs/img"))
    parser.add_argument("--note", default=None, help="a warning line under the title (e.g. 'preliminary run')")
    parser.add_argument("--summary", type=Path, default=None,
                        help="a Markdown file placed after the machine lines: where the targets stand, "
                             "written by whoever read the run")
    parser.add_argument("--commands", type=Path, default=None,
                        help="a Markdown file with the commands that regenerate the report (default: the full run)")
    args = parser.parse_args(argv)
    commands = args.commands.read_text() if args.commands else None
    summary = args.summary.read_text() if args.summary else None
    build_report(args.json, args.out, args.img_dir, args.note, commands, summary)
    print(f"report: wrote {args.out} and plots under {args.img_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
