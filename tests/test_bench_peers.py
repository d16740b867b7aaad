"""The benchmark's peer engines (bench/peers.py) agree with sparsenet on the
models they are timed on: a peer that cannot be built, or computes something
else, would leave holes or wrong ratios in docs/performance.md. Each installed
peer, on a fully connected layer and (peers that run whole nets) on LeNet-5."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import sparsenet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import peers  # noqa: E402


@pytest.mark.parametrize("engine", sorted(peers.ENGINES))
@pytest.mark.parametrize("kind", ["fc", "model"])
def test_peer_matches_sparsenet(rng, engine, kind):
    if not peers.available(engine):
        pytest.skip(f"{engine} is not installed")
    if not peers.runs(engine, kind):
        pytest.skip(f"{engine} does not run {kind}")
    if kind == "fc":
        weight = rng.standard_normal((30, 50)).astype(np.float32) * (rng.random((30, 50)) < 0.3)
        model = sparsenet.Model([sparsenet.Linear(weight, rng.standard_normal(30).astype(np.float32))],
                                input_shape=(50,))
    else:
        model = sparsenet.models.random_model("lenet5", seed=4)
    # A built model's weights and biases are read-only: every peer must take them as they come.
    runner = peers.build(engine, peers.ops_of(model), model.input_shape, threads=1)
    x = rng.random((3, *model.input_shape), dtype=np.float32)
    np.testing.assert_allclose(runner.forward(x), model(x), rtol=1e-4, atol=1e-5)


def test_ab_script_times_each_variant_and_choice(tmp_path):
    """bench/ab.py (builds against each other in alternating processes) runs a
    layer at another density and a pinned dense choice for every variant, and
    reports each in its table and raw results."""
    import json
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    raw = tmp_path / "raw.jsonl"
    python_dir = str(Path(sparsenet.__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, str(root / "bench" / "ab.py"), "--variant", f"a={python_dir}",
                          "--variant", f"b={python_dir},SPARSENET_ISA=scalar", "--layers", "conv5_2@0.05",
                          "conv5_2:dense", "--rounds", "2", "--seconds", "0.01", "--raw", str(raw)],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ""}).stdout
    assert "| conv5_2@0.05 |" in out and "| conv5_2:dense |" in out and "| a / b |" in out
    results = [json.loads(line) for line in raw.read_text().splitlines()]
    assert sorted((r["variant"], r["round"], r["layer"]) for r in results) == sorted(
        (v, n, layer) for v in "ab" for n in (1, 2) for layer in ("conv5_2@0.05", "conv5_2:dense"))
    assert all(r["calls"] >= 1 and 0 < r["min"] <= r["q1"] <= r["median"] for r in results)
    assert {r["density"] for r in results if r["layer"] == "conv5_2@0.05"} == {0.05}
