"""The 13 VGG-16 convolutions (3x3, padding 1) at Han et al.'s densities, sparse
vs dense, and auto (what a model runs: sparse, BLAS, dense direct or dense
Winograd, whichever it measured fastest), batch 1; batch 64 is opt-in
(--large-batches)."""

from __future__ import annotations

import pytest

import benchlib

pytestmark = pytest.mark.conv


@pytest.mark.parametrize("case, batch, backend",
                         benchlib.layer_params(benchlib.vgg16_conv_cases(), batches=(1,), large_batches=(64,),
                                               backends=(*benchlib.BACKENDS, "auto")))
def test_conv_layer(benchmark, request, model_cache, case, batch, backend):
    model = model_cache.get(case.key, backend, case.build_weights, case.build_model)
    benchlib.run_case(benchmark, request.config, model, benchlib.make_input(case.sample_shape, batch),
                      group=case.group(batch), backend=backend,
                      info={"kind": "conv2d", "case": case.describe(), "layer": case.name,
                            "weight_shape": list(case.weight_shape), "padding": case.padding,
                            "density": case.density})
