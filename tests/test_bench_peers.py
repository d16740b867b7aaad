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
