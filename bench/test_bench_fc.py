"""Fully connected layers, sparse vs dense: six shapes x six densities x batch 1 and 64."""

from __future__ import annotations

import pytest

import benchlib

pytestmark = pytest.mark.fc


@pytest.mark.parametrize("case, batch, backend", benchlib.layer_params(benchlib.fc_cases(), benchlib.BATCHES))
def test_fc_layer(benchmark, request, model_cache, case, batch, backend):
    model = model_cache.get(case.key, backend, case.build_weights, case.build_model)
    benchlib.run_case(benchmark, request.config, model, benchlib.make_input(case.sample_shape, batch),
                      group=case.group(batch), backend=backend,
                      info={"kind": "linear", "case": case.describe(), "weight_shape": list(case.weight_shape),
                            "in_features": case.weight_shape[1], "out_features": case.weight_shape[0],
                            "density": case.density})
