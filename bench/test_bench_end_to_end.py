"""Whole networks with Han et al.'s default densities, sparse vs dense, and
auto (the default backend): LeNet-5 and mnist_cnn at batch 1 and 64, VGG-16 at
batch 1 (64 is opt-in), and VGG-16 pruned to 10 % in every layer
(benchlib.NETWORKS)."""

from __future__ import annotations

import pytest

import sparsenet
import benchlib

pytestmark = pytest.mark.end_to_end

def _params() -> list:
    params = []
    for net in benchlib.NETWORKS:
        for batch in (*net.batches, *net.large_batches):
            marks = [pytest.mark.large] if batch in net.large_batches else []
            for backend in ("auto", *benchlib.BACKENDS):
                params.append(pytest.param(net, batch, backend, id=net.case_id(batch, backend), marks=marks))
    return params


@pytest.mark.parametrize("net, batch, backend", _params())
def test_end_to_end(benchmark, request, model_cache, net, batch, backend):
    # Same seed for every backend, hence the same weights.
    model = model_cache.get(("e2e", net.name), backend, lambda: None, lambda _, b: net.build(b))
    benchlib.run_case(benchmark, request.config, model, benchlib.make_input(model.input_shape, batch),
                      group=net.group(batch), backend=backend,
                      info={"kind": "model", "case": f"e2e {net.name}", "arch": net.arch,
                            "densities": {layer.name: round(layer.density, 4) for layer in model.layers
                                          if isinstance(layer, (sparsenet.Linear, sparsenet.Conv2d))}})
