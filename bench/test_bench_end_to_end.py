"""Whole networks with Han et al.'s default densities, sparse vs dense, and
auto (the default backend): LeNet-5 and mnist_cnn at batch 1 and 64, VGG-16 at
batch 1 (64 is opt-in)."""

from __future__ import annotations

import pytest

import sparsenet
import benchlib

pytestmark = pytest.mark.end_to_end

# (architecture, batches run by default, batches behind --large-batches)
NETWORKS = (("lenet5", (1, 64), ()), ("mnist_cnn", (1, 64), ()), ("vgg16", (1,), (64,)))


def _params() -> list:
    params = []
    for arch, batches, large in NETWORKS:
        for batch in (*batches, *large):
            marks = [pytest.mark.large] if batch in large else []
            for backend in ("auto", *benchlib.BACKENDS):
                params.append(pytest.param(arch, batch, backend, id=f"e2e-{arch}-b{batch}-{backend}", marks=marks))
    return params


def _build(arch: str, backend: str) -> sparsenet.Model:
    # Same seed for both backends, hence the same weights.
    return getattr(sparsenet.models, arch)(backend=backend)


@pytest.mark.parametrize("arch, batch, backend", _params())
def test_end_to_end(benchmark, request, model_cache, arch, batch, backend):
    model = model_cache.get(("e2e", arch), backend, lambda: None, lambda _, b: _build(arch, b))
    benchlib.run_case(benchmark, request.config, model, benchlib.make_input(model.input_shape, batch),
                      group=f"e2e {arch} b{batch}", backend=backend,
                      info={"kind": "model", "case": f"e2e {arch}", "arch": arch,
                            "densities": {layer.name: round(layer.density, 4) for layer in model.layers
                                          if isinstance(layer, (sparsenet.Linear, sparsenet.Conv2d))}})
