"""Fuzz the Python loading path: ``sparsenet.Model.load`` on mutated files.

An input is one option byte followed by the bytes of an ``.npz`` file (see
``options``). The file is written to a private temporary directory and loaded
with those options. A load must either give a model or raise one of
sparsenet's typed errors (``ModelError`` and its subclasses) or
``MemoryError``; any other exception, a warning other than sparsenet's own
notes, a crash, a hang (libFuzzer's -timeout) or memory beyond -rss_limit_mb is
a finding. A model that loads must also summarise, run a batch, and survive a
save -> load round trip with the same weights and outputs.

    python tests/fuzz/fuzz_load.py tests/fuzz/corpus/load -max_total_time=60
    python tests/fuzz/fuzz_load.py crash-1234abcd        # replay one input
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from math import prod

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
# The checkout's package, or another copy (tests/sanitize/run.sh points this at its sanitized build).
# The sparsenet that Python finds (installed, or PYTHONPATH=python for the dev
# build), unless SPARSENET_FUZZ_PACKAGE names another (the sanitized build).
if os.environ.get("SPARSENET_FUZZ_PACKAGE"):
    sys.path.insert(0, os.environ["SPARSENET_FUZZ_PACKAGE"])

# Coverage feedback from sparsenet and from the parsers it relies on: zipfile
# (imported by atheris itself, so imported afresh here) and NumPy's .npy format.
sys.modules.pop("zipfile", None)
with atheris.instrument_imports(include=["sparsenet", "zipfile", "numpy.lib._format_impl"]):
    import zipfile  # noqa: F401

    import numpy as np

    import sparsenet
    from sparsenet import Model, ModelError
    from sparsenet.layers import _Weighted

BACKENDS = ("auto", "sparse", "dense", "auto")
ARCHS = (None, "lenet_300_100", "lenet5", "mnist_cnn")
EXTRA_OPTIONS = ({}, {"tf_fc_layout": "in_out"}, {"tf_fc_layout": "out_in"}, {"flatten_order": "chw"})
# Every load runs under a read cap, so a hostile file may make the loader read
# at most this much; the dense backend's weights are held to it as well.
MAX_BYTES = 64 << 20
SMALL_MAX_BYTES = 1 << 16
EXPECTED = (ModelError, MemoryError)


def options(byte: int) -> dict:
    """bits 0-1 backend, 2-3 arch, 4 a small max_bytes, 5-6 import options."""
    opts = {"backend": BACKENDS[byte & 3], "max_bytes": SMALL_MAX_BYTES if byte & 16 else MAX_BYTES}
    arch = ARCHS[(byte >> 2) & 3]
    if arch is not None:
        opts["arch"] = arch
    opts.update(EXTRA_OPTIONS[(byte >> 5) & 3])
    return opts


def option_byte(backend: str = "auto", arch: str | None = None) -> int:
    return BACKENDS.index(backend) | ARCHS.index(arch) << 2


_directory = tempfile.mkdtemp(prefix="sparsenet-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
_path = os.path.join(_directory, "input.npz")
_resaved = os.path.join(_directory, "resaved.npz")


def _cheap(model: Model) -> bool:
    """Small enough to run and to rebuild densely in a fuzz iteration."""
    weighted = [layer for layer in model.layers if isinstance(layer, _Weighted)]
    return (model.input_shape is not None and prod(model.input_shape) <= 4096
            and all(layer.weight.rows <= 1 << 14 and layer.weight.cols <= 1 << 14 for layer in weighted)
            and sum(layer.weight.rows * layer.weight.cols for layer in weighted) <= 1 << 22)


def _check_loaded(model: Model, opts: dict) -> None:
    model.summary()
    repr(model)
    if not _cheap(model):
        return
    x = np.linspace(-1, 1, 2 * prod(model.input_shape), dtype=np.float32).reshape(2, *model.input_shape)
    try:
        y = model(x)
    except EXPECTED:
        y = None  # e.g. a graph whose shapes do not chain: found only when running
    model.save(_resaved)
    again = Model.load(_resaved, backend=opts["backend"], max_bytes=MAX_BYTES)
    assert len(again.layers) == len(model.layers)
    for old, new in zip(model.layers, again.layers):
        assert (old.kind, old.name) == (new.kind, new.name)
        if isinstance(old, _Weighted):
            assert np.array_equal(old.weight.to_dense(), new.weight.to_dense()), old.name
            assert (old.bias is None) == (new.bias is None) and (old.bias is None or np.array_equal(old.bias, new.bias))
    if y is not None:
        z = again(x)
        scale = max(float(np.abs(y).max()) if y.size else 0.0, 1e-30)
        np.testing.assert_allclose(z, y, rtol=1e-4, atol=1e-4 * scale)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    opts = options(data[0])
    with open(_path, "wb") as handle:
        handle.write(data[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # sparsenet's own notes about the options given, not about a fault
        warnings.filterwarnings("ignore", message=r".*(arch=.* is not used|keys not used by architecture)",
                                category=UserWarning)
        try:
            model = Model.load(_path, **opts)
        except EXPECTED:
            return
        _check_loaded(model, opts)


def main() -> None:
    argv = list(sys.argv)
    # libFuzzer defaults that suit this target; later arguments win.
    argv[1:1] = ["-timeout=20", "-rss_limit_mb=3072", "-max_len=65536"]
    atheris.Setup(argv, TestOneInput)
    try:
        atheris.Fuzz()
    finally:
        shutil.rmtree(_directory, ignore_errors=True)


if __name__ == "__main__":
    main()
