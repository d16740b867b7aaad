#!/usr/bin/env python
"""Run sparsenet and each peer engine, at each thread count, in its own process.

Engines with spinning thread pools (OpenBLAS, MKL, torch's OpenMP, onnxruntime)
disturb each other when they share a process on a 2-core machine, so every
(engine, threads) pair gets a fresh ``python -m pytest bench`` with the same
``-k`` filter, hence the same cases and the same weights. Each run writes a
pytest-benchmark JSON into ``--out``; ``bench/report.py`` turns them into
``docs/performance.md``.

    PYTHONPATH=python python bench/run_peers.py --threads 1,2 -k "fc-4096x4096-d10-" --out bench-results
    PYTHONPATH=python python bench/report.py bench-results/*.json

With ``--rounds N`` the whole list of (engine, threads) runs N times, one round
after the other, so that every engine meets the host's slow and fast phases
alike; ``report.py`` keeps each cell's fastest per-run median.

The "sparsenet" engine is the suite's own cases (sparse and dense backends, and
"auto" in the sweep); scipy.sparse is single-threaded and runs at 1 thread only.
Runs are sequential; the processes never overlap.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import peers  # noqa: E402

SINGLE_THREADED = ("scipy",)
# The CPU suites by file, so that another file in bench/ (the CUDA suite, say)
# can neither break nor lengthen these runs.
SPARSENET_FILES = ("test_bench_fc.py", "test_bench_conv.py", "test_bench_end_to_end.py", "test_bench_scaling.py")
PEER_FILES = ("test_bench_peers.py",)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="sparsenet,all",
                        help="comma-separated: sparsenet and peers "
                             f"({', '.join(peers.ENGINES)}), 'all' = every installed peer (default: %(default)s)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default: %(default)s)")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression over the case ids")
    parser.add_argument("-m", dest="marker", default=None, help="pytest -m expression (fc, conv, end_to_end, ...)")
    parser.add_argument("--scaling", action="store_true", help="include the --scaling cases")
    parser.add_argument("--large-batches", action="store_true", help="include the --large-batches cases")
    parser.add_argument("--max-time", type=float, default=None, help="--benchmark-max-time per case (seconds)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every (engine, threads) pair this many times, the rounds one after the other "
                             "(default: %(default)s)")
    parser.add_argument("--out", default="bench-results", help="directory for the JSON files (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)

    engines: list[str] = []
    for name in (n.strip() for n in args.engines.split(",") if n.strip()):
        if name == "sparsenet":
            engines.append(name)
        else:
            try:
                found = peers.parse_engines(name)
            except ValueError as exc:
                parser.error(str(exc))
            for engine in found:
                if not peers.available(engine):
                    print(f"run_peers: {engine} is not installed, skipped", file=sys.stderr)
                elif engine not in engines:
                    engines.append(engine)
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    runs = []
    for round_ in range(1, args.rounds + 1):
        for engine in engines:
            for n in ([1] if engine in SINGLE_THREADED else threads):
                runs.append((engine, n, round_))

    env_base = dict(os.environ)
    # Every child imports the sparsenet this runner imports (the dev tree with
    # PYTHONPATH=python, an installed one, or a snapshot), whatever its cwd.
    try:
        import sparsenet
    except ImportError as exc:
        parser.error(f"cannot import sparsenet ({exc}); install it or run with PYTHONPATH=python")
    package_root = str(Path(sparsenet.__file__).resolve().parent.parent)
    env_base["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env_base.get("PYTHONPATH")) if p)
    print(f"run_peers: sparsenet {sparsenet.__version__} from {package_root}", flush=True)

    failures = 0
    summary = []
    for engine, n, round_ in runs:
        suffix = f"-r{round_}" if args.rounds > 1 else ""
        json_path = out / f"{engine}-t{n}{suffix}.json"
        marker = "not peer" if engine == "sparsenet" else "peer"
        if args.marker:
            marker = f"({marker}) and ({args.marker})"
        files = [str(BENCH_DIR / f) for f in (SPARSENET_FILES if engine == "sparsenet" else PEER_FILES)]
        # A filter that selects nothing for an engine is not an error: keep pytest-benchmark's
        # "not saving anything" warning from becoming one under filterwarnings = error.
        command = [sys.executable, "-m", "pytest", *files, "--benchmark-only", "-p", "no:cacheprovider",
                   "-q", "-W", "ignore:Not saving anything", "--threads", str(n), "-m", marker,
                   f"--benchmark-json={json_path}"]
        if engine != "sparsenet":
            command += ["--peers", engine]
        if args.keyword:
            command += ["-k", args.keyword]
        if args.scaling:
            command.append("--scaling")
        if args.large_batches:
            command.append("--large-batches")
        if args.max_time is not None:
            command.append(f"--benchmark-max-time={args.max_time}")
        command += args.pytest_args
        env = dict(env_base)
        # The pools' sizes at start-up too, not only what set_num_threads changes later.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "SPARSENET_NUM_THREADS"):
            env[var] = str(n)
        label = f"{engine}, {n} thread(s)" + (f", round {round_}/{args.rounds}" if args.rounds > 1 else "")
        print(f"== {label}: {shlex.join(command)}", flush=True)
        if args.dry_run:
            continue
        start = time.monotonic()
        result = subprocess.run(command, env=env, cwd=BENCH_DIR.parent)
        elapsed = time.monotonic() - start
        # pytest exit 5 = nothing selected (e.g. a peer that runs no case of the filter)
        ok = result.returncode in (0, 5)
        failures += not ok
        summary.append({"engine": engine, "threads": n, "round": round_, "json": str(json_path),
                        "returncode": result.returncode, "seconds": round(elapsed, 1)})
        print(f"== {label}: exit {result.returncode} in {elapsed:.0f} s", flush=True)
    if not args.dry_run:
        (out / "runs.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
