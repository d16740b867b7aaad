"""Memory of a model per backend: the file's size, and the process's resident
memory above its baseline after Model.load, after the first forward pass (the
workspaces and, for auto, whatever its measurements kept) and at its peak.
Each backend runs in its own process, so no backend inherits another's heap.

    PYTHONPATH=python python bench/memory.py                      # VGG-16 at Han et al.'s densities
    PYTHONPATH=python python bench/memory.py --arch lenet5 --batch 64
    PYTHONPATH=python python bench/memory.py --density 0.1        # every layer at 10 %

Resident sizes are read after glibc's malloc_trim, so that freed heap pages
returned to the allocator are not counted as held.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile

MiB = 2**20


def _status(field: str) -> int:
    """VmRSS / VmHWM of this process in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _resident() -> int:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: resident as it is
        pass
    return _status("VmRSS")


def _measure(path: str, backend: str, batch: int) -> dict:
    import numpy as np

    import sparsenet

    base = _resident()
    model = sparsenet.Model.load(path, backend=backend)
    loaded = _resident()
    shape = (batch, *model.input_shape) if model.input_shape else None
    if shape is None:
        raise SystemExit(f"{path}: the model records no input shape")
    model(np.zeros(shape, np.float32))
    ran = _resident()
    return {"backend": backend, "loaded": loaded - base, "after_forward": ran - base,
            "peak": _status("VmHWM") - base}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="vgg16")
    parser.add_argument("--density", type=float, default=None,
                        help="every weighted layer at this density (default: Han et al.'s per layer)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--backends", default="sparse,auto,dense")
    parser.add_argument("--child", nargs=3, metavar=("PATH", "BACKEND", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.child[0], args.child[1], int(args.child[2]))))
        return 0

    import sparsenet

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{args.arch}.npz")
        sparsenet.models.random_model(args.arch, densities=args.density, backend="sparse").save(path)
        size = os.path.getsize(path)
        print(f"{args.arch}, {'Han et al. densities' if args.density is None else f'density {args.density}'}, "
              f"batch {args.batch}: file {size / MiB:.1f} MiB")
        print(f"{'backend':>8} {'after load':>11} {'after forward':>14} {'peak':>9}")
        for backend in args.backends.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", path, backend, str(args.batch)],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{backend:>8} {r['loaded'] / MiB:>7.0f} MiB {r['after_forward'] / MiB:>10.0f} MiB "
                  f"{r['peak'] / MiB:>5.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
