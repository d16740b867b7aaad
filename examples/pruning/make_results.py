#!/usr/bin/env python3
"""Turn ``sparsenet reproduce`` runs into ``docs/results.md`` and PNG plots in ``docs/img/``.

    python examples/pruning/make_results.py --runs runs --mnist ../shared/data/mnist \\
        [--fashion /usr/share/datasets/fashion-mnist] [--out docs]

``--runs`` holds one directory per run, named ``<model>_<dataset>`` (``lenet5_mnist``,
``lenet_300_100_fashion``, ...), each written by ``sparsenet reproduce`` (``dense.npz``,
``pruned.npz``, ``results.json``). Every number in the document except the training
times and the recipes is measured again here with sparsenet, on the dataset's full
test split:

1. reproduction table: dense vs pruned test error, weights left, compression, beside
   Han et al.'s published numbers and the targets (met / not met); the pruned model is
   evaluated on both backends, which must agree;
2. per-layer densities beside Han's;
3. file sizes: dense fp32 .npz, sparsenet .npz, sparsenet compressed .npz;
4. latency, in this one process: pruned model on the sparse and dense backends and the
   dense model, batch 1 and 64, at each ``--threads`` count;
5. weight histograms before and after pruning (Han et al., figure 4);
6. sensitivity curves of the MNIST dense models (illustration only: on the test set);
7. the seed table: one dense model pruned to 10 ... 90 % without retraining, file
   size and latency on the sparse, dense and auto backends.

Missing runs are listed as "not run". Output is deterministic except for timings.
``--quick`` (short timings, 1,000-image sensitivity and seed-table accuracy) and the
``--skip-*`` flags are for trying the script out, not for the published document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

import sparsenet
from sparsenet import Model
from sparsenet._timing import median_seconds
from sparsenet.datasets import Split, load_mnist
from sparsenet.format import file_sizes
from sparsenet.models import get_architecture
from sparsenet.prune import model_weights, prune_model, sensitivity, with_weights
from sparsenet.reproduce import RECIPES

# ------------------------------------------------------------------ constants
TRAINING_TIME_NOTE = ("Training times are wall times, recorded by `sparsenet reproduce`; they depend on the machine's "
                      "load (runs that share the cores with other jobs take longer), so read them as upper bounds.")
MODELS = ("lenet_300_100", "lenet5", "mnist_cnn")          # document order
MODEL_TITLES = {"lenet_300_100": "LeNet-300-100", "lenet5": "LeNet-5", "mnist_cnn": "mnist_cnn"}
DATASET_TITLES = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}
DATASET_FLAGS = {"mnist": "--mnist", "fashion": "--fashion"}
BATCHES = (1, 64)
SENSITIVITY_RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
SENSITIVITY_BUDGET = 0.001                                 # accuracy, i.e. 0.1 point
SEED_RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SEED_MODELS = ("mnist_cnn", "lenet5")                      # the first present is used
HISTOGRAM_MODELS = ("lenet5", "lenet_300_100", "mnist_cnn")
EVAL_BATCH = 1000


@dataclass(frozen=True)
class Published:
    """A published result on MNIST, errors in %."""

    dense_error: float
    pruned_error: float
    weights_left: float       # % of weights left
    compression: float
    source: str


PUBLISHED = {
    "lenet_300_100": Published(1.64, 1.59, 8.0, 12, "Han et al. 2015, Table 1"),
    "lenet5": Published(0.80, 0.77, 8.0, 12, "Han et al. 2015, Table 1 (36K of 431K weights)"),
    "mnist_cnn": Published(0.83, 1.01, 10.0, 10, "public TF implementation: 99.17 % -> 98.99 % accuracy, "
                                                  "90 % pruned"),
}


@dataclass(frozen=True)
class Target:
    """The issue's target for an MNIST run: at most ``max_density`` of the weights left
    and a test error at most ``max_error_increase`` above the run's own dense baseline."""

    max_density: float
    max_error_increase: float

    def describe(self) -> str:
        return (f"<= {100 * self.max_density:.1f} % of weights left, error <= dense + "
                f"{100 * self.max_error_increase:.1f} point")


TARGETS = {"lenet_300_100": Target(0.083, 0.001), "lenet5": Target(0.083, 0.001), "mnist_cnn": Target(0.10, 0.002)}


# ------------------------------------------------------------------ small helpers
START = time.perf_counter()


def log(message: str) -> None:
    """A progress line on stderr, with the seconds since the script started."""
    print(f"[{time.perf_counter() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


def pct(fraction: float, digits: int = 2) -> str:
    return f"{100 * fraction:.{digits}f} %"


def points(delta: float) -> str:
    return f"{100 * delta:+.2f}"


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 ** 2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 ** 2:.2f} MiB"


def ms(milliseconds: float) -> str:
    """Two decimals, or three significant digits below 1 ms."""
    return f"{milliseconds:.{max(2, 2 - int(np.floor(np.log10(max(milliseconds, 1e-6)))))}f}"


def threads_text(count: int) -> str:
    return f"{count} thread" + ("" if count == 1 else "s")


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "-"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A plain Markdown table; ``align`` has one letter per column, l or r (default: l then r)."""
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": ":--", "r": "--:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def model_title(name: str) -> str:
    return MODEL_TITLES.get(name, name)


def dataset_title(name: str) -> str:
    return DATASET_TITLES.get(name, name)


def predictions(model: Model, split: Split) -> np.ndarray:
    """Top-1 class of every image, in batches of EVAL_BATCH."""
    return sparsenet.datasets.predictions(model, split.images, EVAL_BATCH)


def accuracy(model: Model, split: Split) -> float:
    return float((predictions(model, split) == split.labels).mean())


def median_ms(model: Model, x: np.ndarray, timing: "Timing") -> float:
    """Median wall time of ``model(x)`` in ms: at least ``timing.min_runs`` runs and
    ``timing.min_time`` seconds, at most ``timing.max_runs`` runs, after two warm-up
    calls (buffers, thread pool, and the auto backend's one-off choice)."""
    return 1e3 * median_seconds(model, x, timing.min_time, timing.max_runs, timing.min_runs, warmup=2)


def weighted_rows(model: Model) -> list[Any]:
    """The model's Linear and Conv2d layers, in order."""
    return [layer for layer in model.layers if isinstance(layer, (sparsenet.Linear, sparsenet.Conv2d))]


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot state, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Any, path: str) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})


# ------------------------------------------------------------------ runs
@dataclass(frozen=True)
class Timing:
    min_time: float
    min_runs: int
    max_runs: int


@dataclass
class Run:
    """One ``<model>_<dataset>`` run directory and what this script measured on it."""

    model: str
    dataset: str
    directory: str
    status: str = "ok"                       # "ok", or why it is not in the tables
    results: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    latency: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def label(self) -> str:
        return f"{model_title(self.model)} on {dataset_title(self.dataset)}"

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def load(self, which: str, backend: str) -> Model:
        return Model.load(self.path(f"{which}.npz"), backend=backend)

    def recipe(self) -> dict:
        return self.results.get("recipe") or {}


def split_run_name(name: str) -> tuple[str, str] | None:
    """``"lenet_300_100_mnist"`` -> ``("lenet_300_100", "mnist")``; None if no model matches."""
    for model in sorted(RECIPES, key=len, reverse=True):
        if name.startswith(model + "_") and len(name) > len(model) + 1:
            return model, name[len(model) + 1:]
    return None


def discover_runs(runs_dir: str, data_dirs: dict[str, str]) -> tuple[list[Run], list[str]]:
    """Every expected run (each model on each dataset with a data directory, and every
    directory found) in document order, with its status; and notes on ignored directories."""
    found: dict[tuple[str, str], str] = {}
    notes = []
    if os.path.isdir(runs_dir):
        for name in sorted(os.listdir(runs_dir)):
            directory = os.path.join(runs_dir, name)
            if not os.path.isdir(directory):
                continue
            parsed = split_run_name(name)
            if parsed is None:
                notes.append(f"`{name}`: not a `<model>_<dataset>` run directory, ignored")
            else:
                found[parsed] = directory
    else:
        notes.append(f"`{runs_dir}` does not exist: no runs")
    datasets = list(data_dirs) + sorted({dataset for _, dataset in found} - set(data_dirs))
    runs = []
    for dataset in datasets:
        for model in list(MODELS) + sorted({m for m, d in found if d == dataset} - set(MODELS)):
            directory = found.get((model, dataset), os.path.join(runs_dir, f"{model}_{dataset}"))
            run = Run(model, dataset, directory)
            missing = [f for f in ("dense.npz", "pruned.npz", "results.json") if not os.path.isfile(run.path(f))]
            if (model, dataset) not in found:
                run.status = "not run"
            elif missing:
                run.status = f"incomplete (no {', '.join(missing)})"
            elif dataset not in data_dirs:
                flag = DATASET_FLAGS.get(dataset, f"--data {dataset}=DIR")
                run.status = f"skipped: no data directory for {dataset} ({flag})"
            else:
                try:
                    with open(run.path("results.json")) as stream:
                        run.results = json.load(stream)
                except (OSError, ValueError) as exc:
                    run.status = f"unreadable results.json ({exc})"
                if run.ok and run.results.get("name", model) != model:
                    notes.append(f"`{directory}`: results.json names {run.results.get('name')!r}, "
                                 f"the directory {model!r}; the directory name is used")
            runs.append(run)
    return runs, notes


# ------------------------------------------------------------------ measurements
def load_tests(runs: list[Run], data_dirs: dict[str, str]) -> dict[str, Split]:
    """The test split of every dataset that has a run to evaluate; runs whose test
    split cannot be read are marked skipped."""
    tests = {}
    for dataset in sorted({run.dataset for run in runs if run.ok}):
        try:
            tests[dataset] = load_mnist(data_dirs[dataset], "test")
        except (OSError, ValueError) as exc:
            for run in runs:
                if run.ok and run.dataset == dataset:
                    run.status = f"skipped: cannot read the test split ({exc})"
    return tests


def evaluate_runs(runs: list[Run], tests: dict[str, Split]) -> None:
    """Section 1-3 numbers: errors of dense.npz and of pruned.npz on both backends,
    weights and nonzeros per layer, file sizes. A run whose files cannot be read is
    marked failed and left out of the later sections."""
    for run in runs:
        if not run.ok:
            continue
        try:
            evaluate_run(run, tests[run.dataset])
        except (OSError, ValueError, KeyError) as exc:
            run.status = f"failed: {type(exc).__name__}: {exc}"
            log(f"{run.label}: {run.status}")


def evaluate_run(run: Run, split: Split) -> None:
    """Evaluate one run (see :func:`evaluate_runs`)."""
    log(f"{run.label}: evaluating dense.npz and pruned.npz (sparse and dense backends) on "
        f"{len(split.labels):,} test images")
    dense_model = run.load("dense", "auto")
    sparse_backend = run.load("pruned", "sparse")
    dense_backend = run.load("pruned", "dense")
    dense_accuracy = accuracy(dense_model, split)
    sparse_predictions = predictions(sparse_backend, split)
    dense_predictions = predictions(dense_backend, split)
    arch = get_architecture(run.model) if run.model in RECIPES else None
    han_from_json = {row["layer"]: row.get("han_density") for row in run.results.get("layers", [])}
    final_sparsity = run.recipe().get("final_sparsity", {})
    layers = []
    for layer in weighted_rows(sparse_backend):
        han = han_from_json.get(layer.name)
        if han is None and arch is not None:
            han = arch.han_densities.get(layer.name)
        recipe_rate = final_sparsity.get(layer.name)
        layers.append({"layer": layer.name, "shape": tuple(layer.shape), "weights": int(np.prod(layer.shape)),
                       "nonzeros": int(layer.nnz), "han_density": han,
                       "recipe_density": None if recipe_rate is None else 1 - recipe_rate})
    weights = sum(row["weights"] for row in layers)
    nonzeros = sum(row["nonzeros"] for row in layers)
    run.evaluation = {
        "test_images": len(split.labels),
        "dense_error": 1 - dense_accuracy,
        "pruned_error": 1 - float((sparse_predictions == split.labels).mean()),
        "pruned_error_dense_backend": 1 - float((dense_predictions == split.labels).mean()),
        "prediction_mismatches": int((sparse_predictions != dense_predictions).sum()),
        "weights": weights, "nonzeros": nonzeros, "density": nonzeros / max(1, weights),
        "layers": layers,
    }
    with tempfile.TemporaryDirectory() as tmp:
        sizes = file_sizes(sparse_backend, tmp)
        compressed = os.path.join(tmp, "compressed.npz")
        sparse_backend.save(compressed, compress=True)
        sizes["sparsenet_compressed"] = os.path.getsize(compressed)
    run.sizes = {key: int(value) for key, value in sizes.items()}


def measure_latency(runs: list[Run], tests: dict[str, Split], threads: Sequence[int], timing: Timing) -> None:
    """Section 4: pruned.npz on the sparse and dense backends and dense.npz on the dense
    backend, per batch size and thread count, the inputs being the first test images."""
    for run in runs:
        if not run.ok:
            continue
        models = {"sparse": run.load("pruned", "sparse"), "dense": run.load("pruned", "dense"),
                  "dense_model": run.load("dense", "dense")}
        images = tests[run.dataset].images
        for count in threads:
            sparsenet.set_num_threads(count)
            for batch in BATCHES:
                x = np.ascontiguousarray(np.resize(images, (batch, *images.shape[1:])), dtype=np.float32)
                cell = {"threads": count, "batch": batch}
                for key, model in models.items():
                    cell[key] = median_ms(model, x, timing)
                run.latency.append(cell)
                log(f"{run.label}: {threads_text(count)}, batch {batch}: sparse {ms(cell['sparse'])} ms, "
                    f"dense backend {ms(cell['dense'])} ms, dense model {ms(cell['dense_model'])} ms")


def measure_sensitivity(run: Run, split: Split, img_dir: str) -> dict:
    """Section 6 for one MNIST dense model: test accuracy with one layer pruned at a time."""
    model = run.load("dense", "auto")
    log(f"{run.label}: sensitivity, {len(SENSITIVITY_RATES)} rates per layer on {len(split.labels):,} images")
    result = sensitivity(model, lambda pruned: accuracy(pruned, split), rates=SENSITIVITY_RATES)
    image = os.path.join(img_dir, f"results_sensitivity_{run.model}.png")
    result.plot(image, title=f"Pruning sensitivity of {model_title(run.model)} (dense, MNIST test set)",
                metric_label=f"test accuracy ({len(split.labels):,} images)")
    return {"result": result, "image": image, "images": len(split.labels)}


def measure_seed_table(run: Run, split: Split, timing: Timing, threads: int, eval_threads: int, img_dir: str) -> dict:
    """Section 7: the dense model pruned per layer to each rate without retraining."""
    dense = run.load("dense", "dense")
    x_by_batch = {batch: np.ascontiguousarray(np.resize(split.images, (batch, *split.images.shape[1:])))
                  for batch in BATCHES}
    rows = []
    for rate in SEED_RATES:
        pruned = prune_model(dense, rate, method="rate", backend="sparse")
        backends = {"sparse": pruned, "dense": with_weights(pruned, {}, backend="dense"),
                    "auto": with_weights(pruned, {}, backend="auto")}
        sparsenet.set_num_threads(eval_threads)
        row: dict[str, Any] = {"rate": rate, "accuracy": accuracy(backends["auto"], split)}
        row["density"] = pruned.nnz / max(1, sum(int(np.prod(layer.shape)) for layer in weighted_rows(pruned)))
        with tempfile.TemporaryDirectory() as tmp:
            row.update(file_sizes(pruned, tmp))
        sparsenet.set_num_threads(threads)
        for batch, x in x_by_batch.items():
            for key, model in backends.items():
                row[(batch, key)] = median_ms(model, x, timing)
        rows.append(row)
        log(f"{run.label}: {100 * rate:.0f} % pruned: accuracy {pct(row['accuracy'])}, " + ", ".join(
            f"batch {b} sparse/dense/auto {ms(row[(b, 'sparse')])}/{ms(row[(b, 'dense')])}/{ms(row[(b, 'auto')])} ms"
            for b in BATCHES))
    figure = new_figure(10, 4)
    for index, batch in enumerate(BATCHES):
        axes = figure.add_subplot(1, len(BATCHES), index + 1)
        x_axis = [100 * row["rate"] for row in rows]
        for key, style in (("sparse", "o-"), ("dense", "s-"), ("auto", "^--")):
            axes.plot(x_axis, [row[(batch, key)] for row in rows], style, markersize=4, label=f"{key} backend")
        axes.set_xlabel("weights pruned (%), every layer, no retraining")
        axes.set_ylabel("median latency (ms)")
        axes.set_title(f"{model_title(run.model)}, batch {batch}, {threads_text(threads)}")
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    image = os.path.join(img_dir, "results_seed_table.png")
    save_figure(figure, image)
    return {"run": run, "rows": rows, "image": image, "threads": threads, "images": len(split.labels)}


def plot_histograms(run: Run, img_dir: str) -> dict:
    """Section 5: dense trained weights vs nonzero weights after pruning and retraining,
    for fc1 and the second weighted layer (conv2 for the CNNs, fc2 for LeNet-300-100)."""
    dense = model_weights(run.load("dense", "dense"))
    pruned = model_weights(run.load("pruned", "sparse"))
    second = "conv2" if "conv2" in dense else list(dense)[1]
    layers = [name for name in dense if name in (second, "fc1")]
    figure = new_figure(10, 3.2 * len(layers))
    stats = []
    for row, name in enumerate(layers):
        before = dense[name][0].ravel()
        after = pruned[name][0].ravel()
        after = after[after != 0]
        limit = float(max(np.abs(before).max(), np.abs(after).max() if after.size else 0.0))
        bins = np.linspace(-limit, limit, 121)
        for column, (values, title, color) in enumerate(((before, "dense, trained", "tab:blue"),
                                                         (after, "pruned + retrained (nonzeros)", "tab:orange"))):
            axes = figure.add_subplot(len(layers), 2, 2 * row + column + 1)
            axes.hist(values, bins=bins, color=color)
            axes.set_title(f"{name}: {title}, {values.size:,} weights", fontsize="medium")
            axes.set_xlabel("weight value")
            axes.set_ylabel("count")
            axes.grid(True, alpha=0.3)
        smallest = float(np.abs(after).min()) if after.size else float("nan")
        stats.append({"layer": name, "dense": before.size, "nonzeros": after.size, "smallest": smallest,
                      "dense_std": float(before.std())})
    image = os.path.join(img_dir, f"results_hist_{run.model}.png")
    save_figure(figure, image)
    return {"run": run, "image": image, "stats": stats}


# ------------------------------------------------------------------ machine
def measure_transform(run: Run, split: Split) -> dict:
    """The "transform" step on the pruned model: neurons left without inputs or
    outputs removed, the next layer shrunk, outputs compared on the test set."""
    from sparsenet.prune import remove_dead_neurons

    pruned = run.load("pruned", "sparse")
    slim, removed = remove_dead_neurons(pruned)
    before, after = pruned(split.images), slim(split.images)
    shapes = {layer.name: "x".join(map(str, layer.shape)) for layer in weighted_rows(slim)}
    return {"run": run, "removed": removed, "shapes": shapes,
            "old_shapes": {layer.name: "x".join(map(str, layer.shape)) for layer in weighted_rows(pruned)},
            "max_abs_diff": float(np.abs(before - after).max()),
            "same_predictions": bool((before.argmax(1) == after.argmax(1)).all()),
            "parameters": (pruned.parameters, slim.parameters)}


def section_transform(transforms: list[dict]) -> str:
    lines = ["## 8. Removing dead neurons (the transform step)", "",
             "`sparsenet.prune.remove_dead_neurons` on each pruned MNIST model: a neuron whose outgoing weights were "
             "all pruned is removed with its row; one whose incoming weights were all pruned outputs a constant, "
             "folded into the next layer's bias; the next layer loses the matching columns. Outputs are compared "
             "on the full test set.", ""]
    rows = []
    for t in transforms:
        changed = [f"{name} {t['old_shapes'][name]} -> {t['shapes'][name]}" for name, count in t["removed"].items() if count]
        rows.append([model_title(t["run"].model), ", ".join(f"{k}: {v}" for k, v in t["removed"].items()),
                     "; ".join(changed) or "-", f"{t['parameters'][0]:,} -> {t['parameters'][1]:,}",
                     f"{t['max_abs_diff']:.1e}", "yes" if t["same_predictions"] else "NO"])
    if rows:
        lines.append(table(["model", "neurons removed", "shapes", "dense parameters", "largest logit change",
                            "same predictions"], rows, "llllrl"))
    else:
        lines.append("No completed MNIST runs.")
    return "\n".join(lines + [""])


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as stream:
            for line in stream:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    logical = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    info = sparsenet.kernel_info()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{cpu}; {logical} logical cores ({usable} usable); sparsenet {sparsenet.__version__}, ISA "
            f"{info['isa']}{' (forced by SPARSENET_ISA)' if info.get('forced_by') else ''}; BLAS: {info['blas']}; "
            f"numpy {np.__version__}, Python {platform.python_version()}; load average at start {load}")


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# ------------------------------------------------------------------ sections
def section_header(runs: list[Run], args: argparse.Namespace, data_dirs: dict[str, str], machine: str,
                   notes: list[str]) -> str:
    lines = ["# Reproducing Han et al. (NIPS 2015) on MNIST with sparsenet", ""]
    lines.append("Han, Pool, Tran and Dally, \"Learning both Weights and Connections for Efficient Neural Networks\" "
                 "(NIPS 2015): train, prune the small weights, retrain the rest. Here PyTorch trains and prunes "
                 "(`sparsenet.prune.pytorch`), and every number below except the training times is measured with "
                 "sparsenet's own inference on the full test split of each dataset.")
    lines.append("")
    if args.quick:
        lines += ["**Quick mode (`--quick`): short timings and subsets of the test set for the sensitivity and "
                  "seed tables. Not for publication.**", ""]
    quick_runs = [run.label for run in runs if run.ok and run.results.get("quick")]
    if quick_runs:
        lines += [f"**Smoke runs (`sparsenet reproduce --quick`: 600 training images, one epoch per phase): "
                  f"{', '.join(quick_runs)}. Their errors say nothing about the method.**", ""]
    lines += ["## How to reproduce", "", "```sh"]
    for dataset, directory in data_dirs.items():
        extra = "" if dataset == "mnist" else f" --dataset {dataset}"
        for model in MODELS:
            lines.append(f"sparsenet reproduce {model} --data {directory}{extra} "
                         f"--out {os.path.join(args.runs, f'{model}_{dataset}')}")
    command = f"python examples/pruning/make_results.py --runs {args.runs} --mnist {args.mnist}"
    if args.fashion:
        command += f" --fashion {args.fashion}"
    for item in args.data or []:
        command += f" --data {item}"
    lines += [command + f" --out {args.out}", "```", ""]
    lines += ["Training is seeded (`--seed 0`) but PyTorch on CPU is not bit-reproducible across machines and "
              "thread counts, so a rerun gives close, not identical, errors. This script is deterministic except "
              "for the latencies.", ""]
    revision = git_revision()
    lines += [f"Machine: {machine}" + (f"; sparsenet commit {revision}" if revision else "") + ".", ""]

    ok = [run for run in runs if run.ok]
    lines += ["## Training", ""]
    if ok:
        rows = []
        for run in ok:
            r = run.results
            machine_info = r.get("machine", {})
            rows.append([dataset_title(run.dataset), model_title(run.model), f"{r.get('train_images', 0):,}",
                         f"{r.get('dense_train_seconds', float('nan')):.0f} s",
                         f"{r.get('prune_retrain_seconds', float('nan')):.0f} s",
                         machine_info.get("torch_threads", "-"), machine_info.get("torch", "-"),
                         "yes" if r.get("quick") else "no"])
        lines += [table(["dataset", "model", "training images", "dense training", "pruning + retraining",
                         "torch threads", "torch", "quick"], rows, "llrrrrll"), ""]
        recipe_rows = []
        for run in ok:
            recipe = run.recipe()
            rates = ", ".join(f"{layer} {100 * rate:g} %" for layer, rate in recipe.get("final_sparsity", {}).items())
            recipe_rows.append([dataset_title(run.dataset), model_title(run.model), recipe.get("dense_epochs", "-"),
                                recipe.get("prune_epochs", "-"), recipe.get("finetune_epochs", "-"),
                                f"{recipe.get('lr', float('nan')):g}", f"{recipe.get('retrain_lr', float('nan')):g}",
                                recipe.get("batch_size", "-"), recipe.get("frequency", "-"), rates])
        lines += [TRAINING_TIME_NOTE, "", "Recipes (`sparsenet.reproduce.RECIPES`, as recorded in each results.json):", "",
                  table(["dataset", "model", "dense epochs", "pruning epochs", "retraining epochs", "lr", "retrain lr",
                         "batch", "prune every (steps)", "final pruning rate per layer"], recipe_rows, "llrrrrrrrl"),
                  "",
                  "Schedule: dense training with Adam (cosine-annealed learning rate); then pruning by magnitude on "
                  "TF-MOT's polynomial-decay schedule (power 3) from 0 to each layer's final rate over the pruning "
                  "epochs, pruning every *prune every* steps (at most a quarter of the schedule), with pruned "
                  "weights, their gradients and optimizer state held at zero; then retraining at constant sparsity. "
                  "Pruning and retraining share one cosine-annealed learning rate starting at *retrain lr*. The "
                  "final rates are fixed per layer, close to Han et al.'s published densities; they were not "
                  "tuned on the test set.", ""]
    else:
        lines += ["No completed runs.", ""]
    lines += ["## Targets", "",
              table(["model", "target (MNIST)"], [[model_title(m), TARGETS[m].describe()] for m in MODELS], "ll"),
              "", "mnist_cnn's target is the public TF implementation's 90 % pruning; \"dense\" is each run's own "
              "dense baseline, trained with the same recipe and seed.", ""]
    if notes:
        lines += ["Notes on the runs directory:", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


def target_verdict(run: Run) -> tuple[str, str]:
    """(target text, "met" / "not met: why") for an MNIST run of a model with a target."""
    target = TARGETS.get(run.model)
    if target is None or run.dataset != "mnist":
        return "-", "-"
    e = run.evaluation
    failures = []
    if e["density"] > target.max_density + 1e-12:
        failures.append(f"{pct(e['density'])} of weights left")
    increase = e["pruned_error"] - e["dense_error"]
    if increase > target.max_error_increase + 1e-9:
        failures.append(f"error {points(increase)} points")
    return target.describe(), "met" if not failures else "not met: " + ", ".join(failures)


def section_reproduction(runs: list[Run]) -> str:
    lines = ["## 1. Reproduction", "",
             "Test errors measured with sparsenet on the whole test split: `dense.npz` (the run's own dense "
             "baseline) and `pruned.npz` (after pruning and retraining, sparse backend; the dense backend must give "
             "the same predictions). Weights left and compression count weights only, biases excluded, as Han et "
             "al. do.", ""]
    rows = []
    notes = []
    for run in runs:
        published = PUBLISHED.get(run.model) if run.dataset == "mnist" else None
        han = (f"{published.dense_error:.2f} % -> {published.pruned_error:.2f} %, {published.weights_left:g} % left, "
               f"{published.compression:g}x" if published else "-")
        if not run.ok:
            rows.append([dataset_title(run.dataset), model_title(run.model), run.status, "", "", "", "", "", han, "",
                         ""])
            continue
        e = run.evaluation
        target, verdict = target_verdict(run)
        if run.results.get("quick"):
            verdict += " (quick run)" if verdict != "-" else ""
        rows.append([dataset_title(run.dataset), model_title(run.model), f"{e['test_images']:,}",
                     pct(e["dense_error"]), pct(e["pruned_error"]), points(e["pruned_error"] - e["dense_error"]),
                     pct(e["density"]), f"{e['weights'] / max(1, e['nonzeros']):.1f}x", han, target, verdict])
        if e["prediction_mismatches"] or e["pruned_error"] != e["pruned_error_dense_backend"]:
            notes.append(f"{run.label}: the sparse and dense backends disagree on {e['prediction_mismatches']} "
                         f"test images (error {pct(e['pruned_error'])} vs {pct(e['pruned_error_dense_backend'])}).")
        recorded = run.results.get("pruned_error")
        if recorded is not None and run.results.get("test_images") == e["test_images"] \
                and abs(recorded - e["pruned_error"]) > 1e-9:
            notes.append(f"{run.label}: results.json records a pruned error of {pct(recorded)}, this script "
                         f"measures {pct(e['pruned_error'])}.")
        if run.results.get("test_images") not in (None, e["test_images"]):
            notes.append(f"{run.label}: `reproduce` evaluated on {run.results['test_images']:,} test images; the "
                         f"numbers here use all {e['test_images']:,}.")
    lines.append(table(["dataset", "model", "test images", "dense error", "pruned error", "change (points)",
                        "weights left", "compression", "published (error, weights left, compression)", "target",
                        "target met?"], rows, "llrrrrrrlll"))
    lines.append("")
    agree = [run for run in runs if run.ok and not run.evaluation["prediction_mismatches"]]
    if agree:
        lines += [f"The sparse and dense backends give identical predictions on every test image for "
                  f"{', '.join(run.label for run in agree)}.", ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    lines += ["Published numbers: LeNet-300-100 and LeNet-5 from Han et al. 2015, Table 1 (their own Caffe "
              "baselines); mnist_cnn from the public TensorFlow iterative-pruning implementation (99.17 % -> 98.99 % "
              "accuracy with 90 % of the weights pruned). Their baselines differ from ours, so compare the change in "
              "points, not the absolute errors.", ""]
    return "\n".join(lines)


def section_layers(runs: list[Run]) -> str:
    lines = ["## 2. Per-layer densities", "",
             "Density = nonzero weights / weights of `pruned.npz`; *recipe* is 1 - the recipe's final pruning rate; "
             "*Han* is Han et al.'s published density (for mnist_cnn, the TF implementation's: FC layers at 10 %, "
             "convolutions unpruned).", ""]
    any_ok = False
    for run in runs:
        if not run.ok:
            continue
        any_ok = True
        e = run.evaluation
        rows = [[row["layer"], "x".join(map(str, row["shape"])), f"{row['weights']:,}", f"{row['nonzeros']:,}",
                 pct(row["nonzeros"] / max(1, row["weights"]), 1),
                 "-" if row["recipe_density"] is None else pct(row["recipe_density"], 1),
                 "-" if row["han_density"] is None else pct(row["han_density"], 0)] for row in e["layers"]]
        totals = []
        for key in ("recipe_density", "han_density"):
            if all(row[key] is not None for row in e["layers"]):
                totals.append(pct(sum(row[key] * row["weights"] for row in e["layers"]) / max(1, e["weights"]), 2))
            else:
                totals.append("-")
        rows.append(["**total**", "", f"{e['weights']:,}", f"{e['nonzeros']:,}", pct(e["density"], 2), *totals])
        lines += [f"### {run.label}", "",
                  table(["layer", "shape", "weights", "nonzeros", "density", "recipe", "Han"], rows, "llrrrrr"), ""]
    if not any_ok:
        lines += ["No completed runs.", ""]
    return "\n".join(lines)


def section_sizes(runs: list[Run]) -> str:
    lines = ["## 3. File sizes", "",
             "The pruned model saved three ways: every weight and bias as a dense float32 array in a plain `.npz`; "
             "sparsenet's `.npz` (CSR weights, 16-bit column indices where they fit, the graph as JSON); and the "
             "same compressed (`model.save(path, compress=True)`, zip deflate).", ""]
    rows = []
    for run in runs:
        if not run.ok:
            continue
        s = run.sizes
        rows.append([dataset_title(run.dataset), model_title(run.model), human_bytes(s["dense"]),
                     human_bytes(s["sparsenet"]), ratio(s["dense"], s["sparsenet"]),
                     human_bytes(s["sparsenet_compressed"]), ratio(s["dense"], s["sparsenet_compressed"])])
    if rows:
        lines.append(table(["dataset", "model", "dense fp32 .npz", "sparsenet .npz", "smaller by",
                            "sparsenet compressed", "smaller by"], rows, "llrrrrr"))
    else:
        lines.append("No completed runs.")
    lines += ["", "Han et al.'s 12x counts weights only; file sizes include indices (2 or 4 bytes per nonzero), "
              "row pointers and biases.", ""]
    return "\n".join(lines)


def section_latency(runs: list[Run], timing: Timing, skipped: bool) -> str:
    lines = ["## 4. Latency", ""]
    if skipped:
        return "\n".join(lines + ["Not measured (`--skip-latency`).", ""])
    lines += [f"Median wall time of one forward pass, measured here in one process (at least {timing.min_runs} runs "
              f"and {timing.min_time:g} s per cell, at most {timing.max_runs:,} runs, after two warm-up calls); the "
              "input is the first test images. *pruned, sparse* and *pruned, dense* are `pruned.npz` on the sparse "
              "(CSR kernels) and dense (BLAS) backends; *dense model* is `dense.npz` on the dense backend. "
              "`sparsenet.set_num_threads` sets the threads of both backends. The machine is shared, so compare "
              "ratios within a row rather than absolute times.", ""]
    any_ok = False
    for run in runs:
        if not run.ok or not run.latency:
            continue
        any_ok = True
        rows = [[cell["batch"], cell["threads"], ms(cell["sparse"]), ms(cell["dense"]), ms(cell["dense_model"]),
                 ratio(cell["dense"], cell["sparse"]), ratio(cell["dense_model"], cell["sparse"])]
                for cell in run.latency]
        lines += [f"### {run.label}", "",
                  table(["batch", "threads", "pruned, sparse (ms)", "pruned, dense (ms)", "dense model (ms)",
                         "dense / sparse", "dense model / sparse"], rows, "rrrrrrr"), ""]
    if not any_ok:
        lines += ["No completed runs.", ""]
    return "\n".join(lines)


def section_histograms(histograms: list[dict], out_dir: str, skipped: bool) -> str:
    lines = ["## 5. Weight distributions", ""]
    if skipped:
        return "\n".join(lines + ["Not drawn (`--skip-plots`).", ""])
    if not histograms:
        return "\n".join(lines + ["No MNIST runs of LeNet-5, LeNet-300-100 or mnist_cnn.", ""])
    lines += ["As in Han et al.'s figure 4: the dense trained weights (left) and the weights that survive pruning, "
              "after retraining (right). Pruning removes the weights around zero; retraining moves the survivors, "
              "leaving the bimodal distribution with a gap around zero.", ""]
    for entry in histograms:
        run = entry["run"]
        lines += [f"### {run.label}", "",
                  f"![weight histograms of {model_title(run.model)}]({os.path.relpath(entry['image'], out_dir)})", ""]
        rows = [[s["layer"], f"{s['dense']:,}", f"{s['nonzeros']:,}", f"{s['dense_std']:.4f}", f"{s['smallest']:.4f}"]
                for s in entry["stats"]]
        lines += [table(["layer", "dense weights", "nonzeros after", "std of dense weights", "smallest magnitude kept"],
                        rows), ""]
    return "\n".join(lines)


def section_sensitivity(sensitivities: list[tuple[Run, dict]], out_dir: str, skipped: bool) -> str:
    lines = ["## 6. Sensitivity (illustration)", ""]
    if skipped:
        return "\n".join(lines + ["Not measured (`--skip-sensitivity`).", ""])
    if not sensitivities:
        return "\n".join(lines + ["No MNIST runs.", ""])
    lines += ["`sparsenet.prune.sensitivity` on each MNIST dense model (`dense.npz`, backend \"auto\"): one layer "
              "pruned at a time by magnitude, no retraining, test accuracy measured with sparsenet (Han et al., "
              "figure 6). `suggest(0.001)` is, per layer, the largest rate that loses at most 0.1 point of accuracy "
              "with that layer alone pruned.", "",
              "**These curves use the test set, so choosing pruning rates from them would be leakage; they are here "
              "for illustration.** The recipes use fixed densities close to Han et al.'s, chosen before training; "
              "a rate chosen from sensitivity belongs on a validation split carved from the training set. Retraining "
              "recovers much of what one-shot pruning loses, which is why the recipes' rates can go well beyond "
              "these one-shot suggestions.", ""]
    for run, entry in sensitivities:
        result = entry["result"]
        suggested = result.suggest(SENSITIVITY_BUDGET)
        recipe = run.recipe().get("final_sparsity", {})
        han = {row["layer"]: row["han_density"] for row in run.evaluation["layers"]}
        rows = [[layer, f"{result.parameters[layer]:,}", f"{100 * suggested[layer]:g} %",
                 "-" if layer not in recipe else f"{100 * recipe[layer]:g} %",
                 "-" if han.get(layer) is None else f"{100 * (1 - han[layer]):g} %"] for layer in result.metrics]
        lines += [f"### {model_title(run.model)}", "",
                  f"![sensitivity of {model_title(run.model)}]({os.path.relpath(entry['image'], out_dir)})", "",
                  f"Test accuracy ({entry['images']:,} images) with one layer pruned:", "",
                  result.to_markdown(digits=4), "",
                  table(["layer", "weights", "suggest(0.001): rate within 0.1 point", "recipe's final rate",
                         "published rate (1 - Han's density)"], rows, "lrrrr"), ""]
    return "\n".join(lines)


def section_seed(seed: dict | None, out_dir: str, skipped: bool) -> str:
    lines = ["## 7. Size and latency against pruning rate (no retraining)", ""]
    if skipped:
        return "\n".join(lines + ["Not measured (`--skip-seed`).", ""])
    if seed is None:
        return "\n".join(lines + ["No MNIST run of mnist_cnn or LeNet-5.", ""])
    run = seed["run"]
    lines += [f"{model_title(run.model)}'s trained dense model (`dense.npz`, MNIST) with every weighted layer pruned "
              "to the same rate by magnitude (`prune_model(dense, rate, method=\"rate\")`), **without retraining**: "
              "accuracy falls at high rates, so this table is about size and speed only (section 1 has the "
              f"retrained results). Accuracy on {seed['images']:,} test images; latency is the median at "
              f"{threads_text(seed['threads'])}, same method as section 4; *auto* is `backend=\"auto\"` (per layer, "
              "sparse when very sparse, else the faster of the two as measured at the first call). The dense "
              ".npz is the same weights stored as dense float32 arrays; sparsenet stores each layer in CSR or dense "
              "form, whichever makes the smaller file, so at low rates both files are the same size.", "",
              f"![latency against pruning rate]({os.path.relpath(seed['image'], out_dir)})", ""]
    rows = []
    for row in seed["rows"]:
        cells = [f"{100 * row['rate']:.0f} %", pct(row["accuracy"]), human_bytes(row["sparsenet"]),
                 human_bytes(row["dense"]), ratio(row["dense"], row["sparsenet"])]
        for batch in BATCHES:
            cells += [ms(row[(batch, "sparse")]), ms(row[(batch, "dense")]), ms(row[(batch, "auto")]),
                      ratio(row[(batch, "dense")], row[(batch, "sparse")])]
        rows.append(cells)
    header = ["pruned", "test accuracy", "sparsenet .npz", "dense .npz", "size ratio"]
    for batch in BATCHES:
        header += [f"b{batch} sparse (ms)", f"b{batch} dense (ms)", f"b{batch} auto (ms)", f"b{batch} dense / sparse"]
    lines += [table(header, rows, "r" * len(header)), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="directory of <model>_<dataset> run directories")
    parser.add_argument("--mnist", required=True, help="MNIST IDX directory (the test split is used)")
    parser.add_argument("--fashion", help="Fashion-MNIST IDX directory, for *_fashion runs")
    parser.add_argument("--data", action="append", metavar="NAME=DIR",
                        help="another dataset's IDX directory, for *_NAME runs (repeatable)")
    parser.add_argument("--out", default="docs", help="where results.md goes; plots go to OUT/img (default docs)")
    parser.add_argument("--threads", default="1,2", help="thread counts for the latency tables (default 1,2)")
    parser.add_argument("--seed-threads", type=int, default=1, help="threads for the seed table's latency (default 1)")
    parser.add_argument("--eval-threads", type=int, default=os.cpu_count() or 1,
                        help="threads for accuracy evaluations (default: all cores)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds of timing per latency cell (default 0.5)")
    parser.add_argument("--min-runs", type=int, default=20, help="timed runs per latency cell, at least (default 20)")
    parser.add_argument("--max-runs", type=int, default=2000,
                        help="timed runs per latency cell, at most (default 2000)")
    parser.add_argument("--sensitivity-images", type=int,
                        help="first N test images for the sensitivity curves (default all 10,000)")
    parser.add_argument("--quick", action="store_true",
                        help="for trying the script: 0.05 s and 5 runs per latency cell, 1,000 images for the "
                             "sensitivity and seed tables")
    parser.add_argument("--skip-latency", action="store_true", help="leave out section 4")
    parser.add_argument("--skip-sensitivity", action="store_true", help="leave out section 6")
    parser.add_argument("--skip-seed", action="store_true", help="leave out section 7")
    parser.add_argument("--skip-plots", action="store_true", help="leave out section 5 (histograms)")
    args = parser.parse_args(argv)
    if args.quick:
        args.min_time, args.min_runs = min(args.min_time, 0.05), min(args.min_runs, 5)
        args.sensitivity_images = args.sensitivity_images or 1000
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    eval_threads = max(1, args.eval_threads)
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    timing = Timing(args.min_time, max(1, args.min_runs), max(1, args.max_runs))
    data_dirs = {"mnist": args.mnist}
    if args.fashion:
        data_dirs["fashion"] = args.fashion
    for item in args.data or []:
        name, sep, directory = item.partition("=")
        if not sep or not name or not directory:
            raise SystemExit(f"--data {item!r}: expected NAME=DIR")
        data_dirs[name] = directory
    img_dir = os.path.join(args.out, "img")
    os.makedirs(img_dir, exist_ok=True)
    started = time.perf_counter()
    previous_threads = sparsenet.get_num_threads()
    machine = machine_line()
    log(machine)

    runs, notes = discover_runs(args.runs, data_dirs)
    for run in runs:
        log(f"{run.label}: {run.status}")
    tests = load_tests(runs, data_dirs)

    sparsenet.set_num_threads(eval_threads)
    evaluate_runs(runs, tests)
    mnist_runs = {run.model: run for run in runs if run.ok and run.dataset == "mnist"}

    histograms = []
    if not args.skip_plots:
        for model in HISTOGRAM_MODELS:
            if model in mnist_runs:
                log(f"{mnist_runs[model].label}: weight histograms")
                histograms.append(plot_histograms(mnist_runs[model], img_dir))

    sensitivities = []
    if not args.skip_sensitivity:
        sparsenet.set_num_threads(eval_threads)
        split = tests.get("mnist")
        if split is not None and args.sensitivity_images:
            split = Split(split.images[:args.sensitivity_images], split.labels[:args.sensitivity_images])
        for model in MODELS:
            if model in mnist_runs:
                sensitivities.append((mnist_runs[model], measure_sensitivity(mnist_runs[model], split, img_dir)))

    transforms = [measure_transform(mnist_runs[m], tests["mnist"]) for m in MODELS if m in mnist_runs]

    if not args.skip_latency:
        measure_latency(runs, tests, threads, timing)

    seed = None
    if not args.skip_seed:
        chosen = next((mnist_runs[m] for m in SEED_MODELS if m in mnist_runs), None)
        if chosen is not None:
            split = tests["mnist"]
            if args.quick:
                split = Split(split.images[:1000], split.labels[:1000])
            log(f"{chosen.label}: seed table, pruned {', '.join(f'{100 * r:.0f}' for r in SEED_RATES)} %")
            seed = measure_seed_table(chosen, split, timing, args.seed_threads, eval_threads, img_dir)
    sparsenet.set_num_threads(previous_threads)

    document = "\n".join([
        section_header(runs, args, data_dirs, machine, notes),
        section_reproduction(runs),
        section_layers(runs),
        section_sizes(runs),
        section_latency(runs, timing, args.skip_latency),
        section_histograms(histograms, args.out, args.skip_plots),
        section_sensitivity(sensitivities, args.out, args.skip_sensitivity),
        section_seed(seed, args.out, args.skip_seed),
        section_transform(transforms),
    ]).rstrip() + "\n"
    path = os.path.join(args.out, "results.md")
    with open(path, "w") as stream:
        stream.write(document)
    log(f"wrote {path} and {len(histograms) + len(sensitivities) + (seed is not None)} plots in {img_dir} "
        f"in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
