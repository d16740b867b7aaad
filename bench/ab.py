"""Builds or settings against each other, layer by layer, in alternating processes.

Two bench runs an hour apart on a shared host can differ by more than the change
being measured. Here each variant (a directory holding a sparsenet package, plus
environment settings) times the same layers in its own process, variants in
turn, round after round, so that the host's drift hits them alike:

    # this checkout with and without its AVX-512 kernels, VGG-16's 13 convolutions
    PYTHONPATH=python python bench/ab.py --variant avx512=python --variant avx2=python,SPARSENET_AVX512=0

    # two builds; conv4_2 at 10 %, and its dense Winograd for scale; two threads
    python bench/ab.py --variant old=/tmp/old/python --variant new=python \\
        --layers conv4_2@0.10 conv4_2:dense-winograd --threads 2 --rounds 4

Layers are the bench's VGG-16 cases (benchlib.vgg16_conv_cases, and the FC
layers fc6, fc7, fc8 of benchlib.fc_cases; same weights): `conv4_2` at Han et
al.'s density, `conv4_2@0.10` at another, `conv4_2:CHOICE`
with an `auto` layer pinned to one of dense, dense-direct, dense-winograd
(`sparse`, the default, runs backend="sparse"; `fc6:dense` runs
backend="dense"); `vgg16` for the 13 convolutions. Each cell is
the lowest, over the rounds, of each process's lower-quartile time in ms;
the last columns divide the first variant's time by each other's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))


def parse_layer(spec: str) -> tuple[str, float | None, str]:
    """'conv4_2', 'conv4_2@0.10', 'conv4_2:dense-winograd' -> (name, density or None, choice)."""
    name, _, choice = spec.partition(":")
    name, _, density = name.partition("@")
    return name, float(density) if density else None, choice or "sparse"


def worker(threads: int, seconds: float, batch: int, specs: list[str]) -> None:
    """Times each layer for `seconds` in this process; one JSON line per layer."""
    import numpy as np

    import sparsenet
    from benchlib import VGG16, fc_cases, vgg16_conv_cases

    sparsenet.set_num_threads(threads)
    cases = {case.name: case for case in vgg16_conv_cases()}
    fc_by_shape = {case.weight_shape: case for case in fc_cases()}
    for spec in VGG16.weighted():
        if spec.kind == "linear":  # fc_cases names them by shape, at Han's densities
            case = fc_by_shape[tuple(spec.weight_shape)]
            cases[spec.name] = dataclasses.replace(case, density=VGG16.han_densities[spec.name])
    convolutions = [name for name, case in cases.items() if case.kind == "conv"]
    for spec in [spec for layer in specs for spec in (convolutions if layer == "vgg16" else [layer])]:
        name, density, choice = parse_layer(spec)
        case = cases[name] if density is None else dataclasses.replace(cases[name], density=density)
        if case.kind == "fc":  # a Linear runs `sparse` or `dense` as its backend
            model = case.build_model(case.build_weights(), choice)
        else:
            model = case.build_model(case.build_weights(), "sparse" if choice == "sparse" else "auto")
            if choice != "sparse":
                model.layers[0]._core._pin_choice(choice)
        x = np.random.default_rng(0).standard_normal((batch, *case.sample_shape)).astype(np.float32)
        for _ in range(3):
            model(x)
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
        ms = np.array(times) * 1e3
        print(json.dumps({"layer": spec, "density": case.density, "min": float(ms.min()),
                          "q1": float(np.percentile(ms, 25)), "median": float(np.median(ms)), "calls": len(ms)}),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR[,VAR=VALUE...]",
                        help="a directory holding the sparsenet package, and environment settings")
    parser.add_argument("--layers", nargs="+", default=["vgg16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="per layer, variant and round")
    parser.add_argument("--raw", help="also write every process's results here (JSON lines)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.threads, args.seconds, args.batch, args.layers)
        return
    if not args.variant:
        parser.error("give at least one --variant")

    variants = []
    for text in args.variant:
        name, _, rest = text.partition("=")
        directory, *settings = rest.split(",")
        if not name or not directory or not all("=" in s for s in settings):
            parser.error(f"--variant {text!r}: expected NAME=DIR[,VAR=VALUE...]")
        variants.append((name, os.path.abspath(directory), dict(s.split("=", 1) for s in settings)))
    best: dict[tuple[str, str], float] = {}
    layers: list[str] = []  # in the workers' order, "vgg16" expanded
    raw = open(args.raw, "w") if args.raw else None
    for round_ in range(1, args.rounds + 1):
        for name, directory, settings in variants:
            env = {**os.environ, **settings, "PYTHONPATH": os.pathsep.join([directory, BENCH])}
            command = [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(args.threads),
                       "--batch", str(args.batch), "--seconds", str(args.seconds), "--layers", *args.layers]
            out = subprocess.run(command, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"variant {name}, round {round_}: exit {out.returncode}\n{out.stderr}")
            for line in out.stdout.splitlines():
                result = json.loads(line)
                key = (result["layer"], name)
                if result["layer"] not in layers:
                    layers.append(result["layer"])
                best[key] = min(best.get(key, float("inf")), result["q1"])
                if raw:
                    raw.write(json.dumps({"variant": name, "round": round_, **result}) + "\n")
        print(f"round {round_}/{args.rounds} done", file=sys.stderr)
    if raw:
        raw.close()
    names = [name for name, _, _ in variants]
    print(f"lowest lower-quartile time over {args.rounds} rounds, ms; {args.threads} thread(s), batch {args.batch}")
    print("| layer | " + " | ".join(names) + "".join(f" | {names[0]} / {n}" for n in names[1:]) + " |")
    print("|---|" + "---:|" * (2 * len(names) - 1))
    for layer in layers:
        times = [best[(layer, n)] for n in names]
        print(f"| {layer} | " + " | ".join(f"{t:.3g}" for t in times)
              + "".join(f" | {times[0] / t:.2f}x" for t in times[1:]) + " |")


if __name__ == "__main__":
    main()
