"""The ``sparsenet`` command: ``demo`` the shipped pruned LeNet-5, ``inspect`` a model file, ``bench``
sparse vs dense, ``convert`` other frameworks' models, ``reproduce`` Han et al.'s pruning results."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Sequence

import numpy as np

from . import get_num_threads, kernel_info, set_num_threads
from .errors import FormatError, ModelError
from ._timing import median_seconds
from .format import file_sizes
from .layers import _Weighted
from .model import Model, _human_bytes
from .models import ARCHITECTURES, random_model

BUILTIN_DEFAULT = ("lenet5", "mnist_cnn", "vgg16")


def _progress(message: str, every_step: bool = False) -> None:
    """A status line: rewritten in place on a terminal; in logs, one line per
    stage and none for the per-run updates (``every_step``)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + message)
    elif not every_step:
        sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _clear_progress() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def _median_latency(model: Model, x: np.ndarray, min_time: float, max_runs: int, label: str) -> float:
    return median_seconds(model, x, min_time, max_runs, progress=lambda runs, median: _progress(
        f"  {label}: run {runs}, median {1e3 * median:.3f} ms", every_step=True))


def _load(source: str, backend: str, arch: str | None) -> Model:
    if source in ARCHITECTURES:
        return random_model(source, backend=backend)
    return Model.load(source, backend=backend, arch=arch)


def _bench_one(source: str, args: argparse.Namespace) -> list[str]:
    _progress(f"{source}: building sparse and dense models")
    sparse = _load(source, "sparse", args.arch)
    dense = _load(source, "dense", args.arch)
    auto = _load(source, "auto", args.arch)
    _clear_progress()
    print(sparse.summary())
    with tempfile.TemporaryDirectory() as tmp:
        sizes = file_sizes(sparse, tmp)
    print(f"file size: sparsenet {_human_bytes(sizes['sparsenet'])}, dense fp32 .npz {_human_bytes(sizes['dense'])} "
          f"({_size_ratio(sizes)})")
    input_shape = sparse.input_shape or args.input_shape
    if input_shape is None:
        raise ModelError(f"{source}: the file records no input shape; pass --input-shape")
    rows = []
    rng = np.random.default_rng(0)
    for batch in args.batch:
        if input_shape == (3, 224, 224) and batch > 8 and not args.full:
            print(f"  (skipping batch {batch} for {source}: pass --full to run it)")
            continue
        x = rng.standard_normal((batch, *input_shape)).astype(np.float32)
        result = {}
        for name, model in (("sparse", sparse), ("dense", dense), ("auto", auto)):
            result[name] = _median_latency(model, x, args.min_time, args.max_runs, f"{source} batch {batch} {name}")
        _clear_progress()
        err = float(np.abs(sparse(x) - dense(x)).max() / max(1e-30, float(np.abs(dense(x)).max())))
        rows.append((source, batch, result, err))
    print()
    return [f"{s:<14} {b:>5}  {1e3 * r['sparse']:>10.3f}  {1e3 * r['dense']:>10.3f}  {1e3 * r['auto']:>10.3f}"
            f"  {r['dense'] / r['sparse']:>7.2f}x  {r['dense'] / r['auto']:>7.2f}x  {e:9.1e}" for s, b, r, e in rows]


def data_path(*parts: str) -> str:
    """A file shipped in the package's data directory."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", *parts)


DEMO_MODEL = "lenet5_mnist_pruned.npz"
DEMO_SAMPLE = "mnist-sample"


def cmd_demo(args: argparse.Namespace) -> int:
    from .datasets import accuracy, load_mnist

    if args.threads:
        set_num_threads(args.threads)
    path = args.model or data_path(DEMO_MODEL)
    data = args.data or data_path(DEMO_SAMPLE)
    sparse = Model.load(path, backend="sparse", arch=args.arch)
    dense = Model.load(path, backend="dense", arch=args.arch)
    images, labels = load_mnist(data, "test")
    info = kernel_info()
    weights = sum(int(np.prod(layer.shape)) for layer in sparse.layers if isinstance(layer, _Weighted))
    print(f"sparsenet demo: {os.path.basename(path)}, {100 * sparse.nnz / weights:.2f} % of {weights:,} weights left "
          f"({weights / sparse.nnz:.1f}x fewer); {info['isa']} kernels, {get_num_threads()} threads\n")
    print(sparse.summary())
    source = "the MNIST test set" if args.data else "a sample of the MNIST test set (LeCun, Cortes & Burges)"
    print(f"\n{len(labels):,} images from {source}")
    results = {name: accuracy(model, images, labels) for name, model in (("sparse", sparse), ("dense", dense))}
    print(f"accuracy: sparse backend {100 * results['sparse']:.2f} %, dense backend {100 * results['dense']:.2f} %"
          + ("" if results["sparse"] == results["dense"] else "  (backends DISAGREE)"))
    with tempfile.TemporaryDirectory() as tmp:
        sizes = file_sizes(sparse, tmp)
    print(f"file size: sparsenet {_human_bytes(sizes['sparsenet'])}, dense fp32 .npz {_human_bytes(sizes['dense'])} "
          f"({_size_ratio(sizes)})")
    print("median latency per forward pass:")
    for batch in (1, 64, len(images)):
        x = np.ascontiguousarray(images[:batch])
        times = {name: _median_latency(model, x, args.min_time, args.max_runs, f"batch {batch} {name}")
                 for name, model in (("sparse", sparse), ("dense", dense))}
        _clear_progress()
        print(f"  batch {batch:>5}: sparse {1e3 * times['sparse']:8.3f} ms, dense {1e3 * times['dense']:8.3f} ms, "
              f"sparse is {times['dense'] / times['sparse']:.2f}x faster")
    record_path = os.path.splitext(path)[0] + ".json"
    if not args.model and os.path.exists(record_path):
        import json

        with open(record_path) as stream:
            record = json.load(stream)
        print(f"on the full 10,000-image MNIST test set (docs/results.md): pruned error "
              f"{100 * record['pruned_error']:.2f} %, dense baseline {100 * record['dense_error']:.2f} %")
    if results["sparse"] != results["dense"]:
        return 1
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import run

    try:
        run(args.name, args.data, args.out or os.path.join("runs", f"{args.name}"), dataset=args.dataset,
            seed=args.seed, threads=args.threads, quick=args.quick)
    except ImportError as exc:
        print(f"sparsenet: error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.threads:
        set_num_threads(args.threads)
    info = kernel_info()
    print(f"sparsenet bench: {info['isa']} kernels, {get_num_threads()} threads, BLAS {info['blas']}")
    if info["blas_core_forced"]:
        print(f"note: OPENBLAS_CORETYPE={info['blas_core_forced']} chooses the dense backend's BLAS kernels, "
              "which may be narrower than this CPU's; unset it for the dense baseline at full speed")
    print()
    sources = BUILTIN_DEFAULT if args.source in (None, "builtin") else (args.source,)
    lines = []
    for source in sources:
        lines += _bench_one(source, args)
    print("median latency (ms); speedup = dense / sparse; max |sparse - dense| / max |dense|")
    print(f"{'model':<14} {'batch':>5}  {'sparse':>10}  {'dense':>10}  {'auto':>10}  {'speedup':>8}  {'auto':>8}  {'rel err':>9}")
    print("\n".join(lines))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    if args.file in ARCHITECTURES and not os.path.exists(args.file):
        model = random_model(args.file)
    else:
        try:
            model = _load_source(args.file, args.arch, args.input_shape)
        except ImportError as exc:  # a framework extra that is not installed
            print(f"sparsenet: error: {exc}", file=sys.stderr)
            return 2
    print(model.summary())
    if os.path.exists(args.file):
        print(f"file: {args.file}, {_human_bytes(os.path.getsize(args.file))}")
    return 0


def _load_source(source: str, arch: str | None, input_shape: tuple[int, ...] | None) -> Model:
    """Any file sparsenet reads, by extension: sparsenet or exported .npz,
    PyTorch state_dict (with ``arch``), ONNX, Keras."""
    extension = os.path.splitext(source)[1].lower()
    if arch and extension not in (".npz", ".pt", ".pth"):
        raise FormatError(f"{source}: --arch applies to PyTorch state_dicts and exported .npz weights; "
                          f"a '{extension}' file describes its own layers")
    if extension == ".npz":
        return Model.load(source, arch=arch)
    if extension in (".pt", ".pth"):
        if not arch:
            raise FormatError(f"{source}: a PyTorch state_dict holds weights only; pass --arch NAME "
                              f"({', '.join(ARCHITECTURES)})")
        return Model.from_torch(source, arch=arch)
    if extension == ".onnx":
        return Model.from_onnx(source, input_shape=input_shape)
    if extension in (".keras", ".h5", ".hdf5"):
        return Model.from_keras(source, input_shape=input_shape)
    raise FormatError(f"{source}: unknown source type '{extension}' (expected .npz, .pt, .pth, .onnx, "
                      ".keras or .h5)")


def cmd_convert(args: argparse.Namespace) -> int:
    try:
        model = _load_source(args.source, args.arch, args.input_shape)
    except ImportError as exc:  # a framework extra that is not installed
        print(f"sparsenet: error: {exc}", file=sys.stderr)
        return 2
    model.save(args.output)
    print(model.summary())
    stored = sum(layer.stored_bytes for layer in model.layers)
    dense = sum(layer.dense_bytes for layer in model.layers)
    print(f"weights: {_human_bytes(dense)} dense fp32 -> {_human_bytes(stored)} stored "
          f"({dense} -> {stored} bytes)")
    print(f"file: {args.source} ({_human_bytes(os.path.getsize(args.source))}) -> {args.output} "
          f"({_human_bytes(os.path.getsize(args.output))})")
    return 0


def cmake_dir() -> str:
    """Where a pip-installed sparsenet keeps sparsenetConfig.cmake (for find_package)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib", "cmake", "sparsenet")


class _PrintAndExit(argparse.Action):
    def __init__(self, *args, value, **kwargs):
        super().__init__(*args, **kwargs)
        self.value = value

    def __call__(self, parser, namespace, values, option_string=None):
        print(self.value())
        parser.exit()


def _size_ratio(sizes: dict) -> str:
    """"7.6x smaller", or "2.3x larger" for a model too small or dense to gain."""
    ratio = sizes["dense"] / sizes["sparsenet"]
    return f"{ratio:.1f}x smaller" if ratio >= 1 else f"{1 / ratio:.1f}x larger"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _sample_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes separated by commas (e.g. 1,28,28), got {text!r}")
    return shape


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparsenet", description="Sparse neural-network inference engine.")
    parser.add_argument("--cmake-dir", action=_PrintAndExit, nargs=0, value=cmake_dir,
                        help="print the directory to pass as sparsenet_DIR to CMake, and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="classify MNIST digits with the shipped pruned LeNet-5 on both backends")
    demo.add_argument("--model", help="a sparsenet .npz file (default: the shipped pruned LeNet-5)")
    demo.add_argument("--arch", help="architecture for weights exported by other tools (with --model)")
    demo.add_argument("--data", help="a directory of MNIST-format IDX files whose test split to classify "
                                     "(default: the shipped 1,000-image sample)")
    demo.add_argument("--threads", type=_positive_int,
                      help="threads for sparse kernels and BLAS (default: all cores)")
    demo.add_argument("--min-time", type=_positive_float, default=0.5, help="seconds to spend per measurement (default 0.5)")
    demo.add_argument("--max-runs", type=_positive_int, default=200, help="runs per measurement at most (default 200)")
    demo.set_defaults(func=cmd_demo)

    inspect = sub.add_parser("inspect", help="print the per-layer summary of a model file")
    inspect.add_argument("file", help="any file convert reads (.npz, .pt/.pth with --arch, .onnx, .keras, .h5), "
                                      "or a built-in architecture name")
    inspect.add_argument("--arch", help="architecture for PyTorch state_dicts and weights exported by other tools")
    inspect.add_argument("--input-shape", type=_sample_shape,
                         help="one sample's shape, e.g. 1,28,28 (C,H,W), for files that do not record it")
    inspect.set_defaults(func=cmd_inspect)

    bench = sub.add_parser("bench", help="run sparse and dense backends side by side")
    bench.add_argument("source", nargs="?", default="builtin",
                       help="a .npz model file, a built-in architecture name, or 'builtin' "
                            f"({', '.join(BUILTIN_DEFAULT)} at Han et al.'s densities; the default)")
    bench.add_argument("--arch", help="architecture for weights exported by other tools")
    bench.add_argument("--batch", type=_positive_int, nargs="+", default=[1, 64], help="batch sizes (default: 1 64)")
    bench.add_argument("--threads", type=_positive_int,
                      help="threads for sparse kernels and BLAS (default: all cores)")
    bench.add_argument("--input-shape", type=_sample_shape,
                       help="one sample's shape, e.g. 1,28,28, for files that do not record it")
    bench.add_argument("--min-time", type=_positive_float, default=1.0, help="seconds to spend per measurement (default 1)")
    bench.add_argument("--max-runs", type=_positive_int, default=200, help="runs per measurement at most (default 200)")
    bench.add_argument("--full", action="store_true", help="include VGG batches above 8")
    bench.set_defaults(func=cmd_bench)

    convert = sub.add_parser("convert", help="convert a PyTorch, ONNX, Keras or exported .npz model to sparsenet's format")
    convert.add_argument("source", help="a .pt/.pth state_dict (with --arch), .onnx, .keras, .h5, or .npz (with --arch)")
    convert.add_argument("-o", "--output", required=True, help="the sparsenet .npz file to write")
    convert.add_argument("--arch", help=f"built-in architecture for state_dicts and exported .npz ({', '.join(ARCHITECTURES)})")
    convert.add_argument("--input-shape", type=_sample_shape,
                         help="one sample's shape, e.g. 1,28,28 (C,H,W), for files that do not record it")
    convert.set_defaults(func=cmd_convert)

    reproduce = sub.add_parser("reproduce", help="train, prune, retrain and evaluate a network as Han et al. (needs torch)")
    reproduce.add_argument("name", choices=["lenet_300_100", "lenet5", "mnist_cnn"])
    reproduce.add_argument("--data", required=True, help="directory of MNIST-format IDX files (MNIST or Fashion-MNIST)")
    reproduce.add_argument("--out", help="output directory (default runs/NAME)")
    reproduce.add_argument("--dataset", help="the dataset's name for the report (default: the directory's name)")
    reproduce.add_argument("--seed", type=int, default=0)
    reproduce.add_argument("--threads", type=_positive_int, help="PyTorch threads for training")
    reproduce.add_argument("--quick", action="store_true", help="a smoke run on 600 images, one epoch per phase")
    reproduce.set_defaults(func=cmd_reproduce)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ModelError, FileNotFoundError) as exc:
        print(f"sparsenet: error: {exc}", file=sys.stderr)
        return 2
